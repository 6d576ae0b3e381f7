"""A generative model of inference-log records, for drift tests, the false-alarm benchmark and
demos that cannot render hundreds of slides.

Each record comes from latent slide factors z (tissue composition, stain intensity, …): the
embedding is a fixed linear map of z plus noise, QC numbers depend on z (optical density on the
stain factor, tissue area on composition), predictions are softmax/sigmoid heads of z. Fresh draws
from the same model are an *honest* null (an independent cohort from the same population), unlike
bootstrapping reference rows, which is closer to the reference than a new cohort would be.

`ShiftSpec` knobs (cscl.synthetic) act like they do on rendered slides:
- stain: optical density mean moves, its spread changes, the embedding moves along a fixed
  direction (a lab's staining);
- scanner: mpp × (1 + 0.4 s), another vendor, lower OD spread (blur), an embedding offset;
- composition: the tumour factor's mean moves (more/less tumour) → embedding, tissue area and
  predicted subtype move with it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cscl.io import storage
from cscl.io.manifest import load_manifest
from cscl.monitoring.logs import logs_root
from cscl.wsi.encoders import load_encoder
from cscl.wsi.extract import ExtractConfig, features_in_memory
from cscl.wsi.readers import open_slide

SUBTYPES = ("HER2+", "LumA", "LumB", "TNBC")


@dataclass
class RecordModel:
    """A fixed population (seeded); `sample` draws cohorts from it."""

    dim: int = 32
    seed: int = 0
    base_mpp: float = 0.5
    vendor: str = "aperio"

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 77])
        self.k = 4  # latent factors: tumour, stain, cellularity, other
        self.W = rng.normal(size=(self.k, self.dim)) / np.sqrt(self.k)
        self.stain_dir = rng.normal(size=self.dim)
        self.stain_dir /= np.linalg.norm(self.stain_dir)
        self.scanner_dir = rng.normal(size=self.dim)
        self.scanner_dir /= np.linalg.norm(self.scanner_dir)
        self.V = rng.normal(size=(self.k, len(SUBTYPES)))

    def sample(self, n: int, seed: int, shift: Any = None) -> dict[str, Any]:
        """n slides: `embeddings` (n, dim), `predictions`, `qc` (lists of dicts), `labels`."""
        s_stain = float(getattr(shift, "stain", 0.0) or 0.0)
        s_scan = float(getattr(shift, "scanner", 0.0) or 0.0)
        s_comp = float(getattr(shift, "composition", 0.0) or 0.0)
        rng = np.random.default_rng([self.seed, seed, 1])
        z = rng.normal(size=(n, self.k))
        z[:, 0] += 1.2 * s_comp
        X = z @ self.W + 0.3 * rng.normal(size=(n, self.dim))
        X += 2.0 * s_stain * self.stain_dir + 2.0 * s_scan * self.scanner_dir
        od_mean = 0.35 + 0.05 * z[:, [1]] + 0.01 * rng.normal(size=(n, 3))
        od_mean = od_mean + s_stain * np.array([0.08, -0.05, 0.06])
        od_std = 0.12 + 0.01 * rng.normal(size=(n, 3))
        od_std = od_std * (1.0 + 0.3 * s_stain) * (1.0 - 0.35 * s_scan)
        area = np.exp(3.0 + 0.2 * z[:, 2] + 0.1 * z[:, 0] + 0.05 * rng.normal(size=n))
        logits = z @ self.V
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        er = 1.0 / (1.0 + np.exp(-(1.5 * z[:, 0] - 0.5 * z[:, 2])))
        risk = 0.8 * z[:, 0] + 0.2 * z[:, 3]
        mpp = self.base_mpp * (1.0 + 0.4 * s_scan)
        vendor = self.vendor if s_scan < 0.3 else "hamamatsu"
        preds, qcs = [], []
        for i in range(n):
            preds.append(
                {
                    "subtype": {c: float(p[i, j]) for j, c in enumerate(SUBTYPES)},
                    "er_status": {"negative": float(1 - er[i]), "positive": float(er[i])},
                    "os": {"risk_score": float(risk[i])},
                }
            )
            qcs.append(
                {
                    "tissue_area_mm2": float(area[i]),
                    "mpp": float(mpp),
                    "od_mean": [float(v) for v in od_mean[i]],
                    "od_std": [float(v) for v in od_std[i]],
                    "vendor": vendor,
                }
            )
        labels = {"er_status": ["positive" if rng.random() < e else "negative" for e in er]}
        return {
            "embeddings": X.astype(np.float32),
            "predictions": preds,
            "qc": qcs,
            "labels": labels,
        }


def make_records(
    cohort: dict[str, Any], model_version: str, day: dt.date | str, seed: int = 0
) -> list[dict[str, Any]]:
    """Inference-log records (docs/CONTRACTS.md shape) for a sampled cohort."""
    rng = np.random.default_rng(seed)
    day = dt.date.fromisoformat(str(day))
    out = []
    for i, (e, p, q) in enumerate(
        zip(cohort["embeddings"], cohort["predictions"], cohort["qc"], strict=True)
    ):
        t = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=int(i * 7))
        out.append(
            {
                "request_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)),
                "time": t.isoformat(),
                "model_version": model_version,
                "slide_id": f"slide-{seed}-{i:05d}",
                "embedding": [round(float(v), 6) for v in e],
                "predictions": p,
                "qc": q,
            }
        )
    return out


def write_records(
    prefix: str,
    records: Iterable[dict[str, Any]],
    *,
    workers: int = 16,
) -> int:
    """Write records where the serving logger would: `<prefix>/inference-logs/date=D/<id>.json`."""
    root = logs_root(prefix)
    client = storage.s3_client() if storage.is_s3(prefix) else None

    def put(rec: dict[str, Any]) -> None:
        day = str(rec["time"])[:10]
        uri = f"{root}/date={day}/{rec['request_id']}.json"
        body = json.dumps(rec).encode()
        if client is not None:
            bucket, key = storage.parse_s3_uri(uri)
            client.put_object(Bucket=bucket, Key=key, Body=body)
        else:
            p = storage.local_path(uri)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)

    recs = list(records)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(put, recs))
    return len(recs)


def slide_records(
    manifest_uri: str,
    model_version: str,
    *,
    day: dt.date | str,
    backbone: str = "test_resnet",
    target_mpp: float = 2.0,
    patch_size: int = 64,
    head_seed: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Log records made by the real slide path: open → tissue → QC (`cscl.wsi.qc`) → patch
    features (`cscl.wsi.extract`, a seeded random-init backbone) → mean-pooled embedding.

    Predictions come from a fixed random linear head on the embedding (3-class softmax + a risk
    score): enough for drift tests, not a trained model. The H&E slides of the manifest only.
    """
    enc = load_encoder(backbone, allow_random=True, device="cpu", seed=0)
    cfg = ExtractConfig(
        backbone=backbone,
        allow_random=True,
        patch_size=patch_size,
        target_mpp=target_mpp,
        batch_size=32,
        num_workers=0,
        torch_threads=1,
    )
    slides = load_manifest(manifest_uri)
    slides = slides[slides["stain"] == "HE"]
    emb, preds, qcs = [], [], []
    head = None
    for uri, sid in zip(slides["slide_uri"], slides["slide_id"], strict=True):
        sf = features_in_memory(open_slide(uri), cfg, enc, slide_id=sid)
        e = np.asarray(sf.features, dtype=np.float32).mean(0)
        if head is None:
            head = np.random.default_rng([head_seed, 5]).normal(size=(e.size, 4)) / np.sqrt(e.size)
        z = e @ head
        p = np.exp(z[:3] - z[:3].max())
        p /= p.sum()
        emb.append(e)
        preds.append(
            {
                "subtype": {c: float(v) for c, v in zip(("A", "B", "C"), p, strict=True)},
                "os": {"risk_score": float(z[3])},
            }
        )
        qc = sf.extra["qc"]
        qcs.append(json.loads(qc) if isinstance(qc, str) else dict(qc))
    cohort = {"embeddings": np.stack(emb), "predictions": preds, "qc": qcs}
    recs = make_records(cohort, model_version, day, seed=seed)
    for r, sid in zip(recs, slides["slide_id"], strict=True):
        r["slide_id"] = str(sid)
    return recs
