"""Model bundle: one self-describing directory that packaging writes and serving loads.

Layout (docs/CONTRACTS.md "Model bundle directory"):

    bundle.json          everything needed to load: model, backbone, preprocessing, heads, version,
                         training fingerprint, metrics, sha256 of every file
    config.json          the training run's config (so `load_trained(bundle_dir)` works as is)
    adapter.pt, slide_encoder.pt, head.pt   state dicts from the run (weights_only loadable)
    heads.json           task heads (JSON, numpy-only application: cscl.eval.heads)
    backbone.pth         optional patch-encoder weights (absent for a random-init backbone)
    reference.parquet    optional reference set for drift monitoring

Loading needs nothing outside the directory: a bundle copied into a .mar or a container serves the
same predictions it was packaged with, and file hashes catch a partial copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cscl.errors import InputError
from cscl.io.storage import atomic_path

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "cscl-bundle/1"
HEADS_FILE = "heads.json"
BACKBONE_FILE = "backbone.pth"
REFERENCE_FILE = "reference.parquet"
RUN_CONFIG = "config.json"
PREPROCESSING_KEYS = ("target_mpp", "patch_size", "extractor_hash", "encoder")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _copy(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _task_vocab(heads: dict) -> dict:
    """{task: {"type", "classes"}}: the label vocabularies clients need to read predictions."""
    out = {}
    for task, head in heads.items():
        if task.startswith("_") or not isinstance(head, dict):
            continue
        out[task] = {"type": head.get("type")}
        if head.get("classes") is not None:
            out[task]["classes"] = list(head["classes"])
    return out


def save_bundle(
    out_dir: str | Path,
    run_dir: str | Path,
    heads: dict | None,
    backbone: dict,
    preprocessing: dict,
    version: str,
    training_fingerprint: str | None,
    metrics: dict | None = None,
    reference: str | Path | None = None,
    *,
    name: str = "cscl",
    git_commit: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a bundle directory from a training run; returns `out_dir`.

    backbone: {"name": timm name, "weights": weights file or None, "random_init": bool, "seed": int}.
    preprocessing: {"target_mpp", "patch_size", "min_tissue", "tissue", "feature_dtype",
    "extractor_hash", "encoder", "input_dim", ...} — what makes a slide's features comparable
    with the training features (checked at inference).
    """
    from cscl.train.checkpoint import read_config

    run_dir, out = Path(run_dir), Path(out_dir)
    missing = [k for k in PREPROCESSING_KEYS if preprocessing.get(k) in (None, "")]
    if missing:
        raise InputError(f"bundle preprocessing lacks {missing}", hint="take them from features")
    if not backbone.get("name"):
        raise InputError("bundle backbone needs a timm model name")
    if backbone.get("weights") is None and not backbone.get("random_init"):
        raise InputError(
            f"backbone {backbone['name']!r} has no weights file and is not random-init",
            hint="pass --backbone-weights FILE (the weights the features were extracted with)",
        )
    cfg = read_config(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    _copy(run_dir / RUN_CONFIG, out / RUN_CONFIG)
    files.append(RUN_CONFIG)
    for fname in (cfg.get("files") or {}).values():
        if not (run_dir / fname).is_file():
            raise InputError(f"run {run_dir} lacks {fname}", hint="rerun `cscl pretrain`")
        _copy(run_dir / fname, out / fname)
        files.append(fname)
    heads_file = None
    if heads:
        from cscl.eval.heads import save_heads

        save_heads(heads, out / HEADS_FILE)
        heads_file = HEADS_FILE
        files.append(HEADS_FILE)
    weights_file = None
    if backbone.get("weights") is not None:
        src = Path(backbone["weights"])
        if not src.is_file():
            raise InputError(f"backbone weights file not found: {src}")
        _copy(src, out / BACKBONE_FILE)
        weights_file = BACKBONE_FILE
        files.append(BACKBONE_FILE)
    ref_file = None
    if reference is not None:
        ref = Path(reference)
        if ref.resolve() != (out / REFERENCE_FILE).resolve():
            _copy(ref, out / REFERENCE_FILE)
        ref_file = REFERENCE_FILE
        files.append(REFERENCE_FILE)
    doc: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "version": version,
        "git_commit": git_commit,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "loader": "cscl.train.checkpoint.load_trained",
            "config": RUN_CONFIG,
            "kind": cfg.get("kind"),
            "run_model_version": cfg.get("model_version"),
            "input_dim": cfg.get("input_dim"),
            "files": dict(cfg.get("files") or {}),
        },
        "backbone": {
            "name": backbone["name"],
            "weights": weights_file,
            "random_init": bool(backbone.get("random_init", False)),
            "seed": int(backbone.get("seed", 0)),
        },
        "preprocessing": dict(preprocessing),
        "heads": heads_file,
        "tasks": _task_vocab(heads or {}),
        "training_fingerprint": training_fingerprint,
        "metrics": metrics or {},
        "reference": ref_file,
        "files": {f: sha256_file(out / f) for f in files},
    }
    if extra:
        doc["extra"] = extra
    with atomic_path(out / BUNDLE_FILE) as tmp:  # written last: its presence marks completion
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return out


@dataclass
class Bundle:
    """A loaded bundle description; `load_model` / `heads` read the files it names."""

    path: Path
    meta: dict
    heads: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "cscl"))

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def preprocessing(self) -> dict:
        return dict(self.meta["preprocessing"])

    @property
    def backbone(self) -> dict:
        return dict(self.meta["backbone"])

    @property
    def input_dim(self) -> int | None:
        d = self.meta["model"].get("input_dim") or self.meta["preprocessing"].get("input_dim")
        return int(d) if d is not None else None

    @property
    def backbone_weights(self) -> Path | None:
        w = self.meta["backbone"].get("weights")
        return self.path / w if w else None

    @property
    def reference_path(self) -> Path | None:
        r = self.meta.get("reference")
        return self.path / r if r else None

    def load_model(self, device=None):
        """The slide embedder (cscl.train.checkpoint.TrainedModel) on `device`."""
        from cscl.train.checkpoint import load_trained

        return load_trained(self.path, device=device)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read and check `bundle.json` (format, files present, sha256 when `verify`)."""
    path = Path(path)
    meta_path = path / BUNDLE_FILE
    if not meta_path.is_file():
        raise InputError(
            f"{path} is not a model bundle (no {BUNDLE_FILE})",
            hint="create one with `cscl package --model RUN_DIR --out DIR`",
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path} is not valid JSON: {exc}") from exc
    if meta.get("format") != BUNDLE_FORMAT:
        raise InputError(
            f"{meta_path}: unsupported bundle format {meta.get('format')!r} "
            f"(this cscl reads {BUNDLE_FORMAT})"
        )
    for fname, digest in (meta.get("files") or {}).items():
        f = path / fname
        if not f.is_file():
            raise InputError(f"bundle {path} lacks {fname}", hint="copy the whole bundle directory")
        if verify and sha256_file(f) != digest:
            raise InputError(
                f"bundle file {f} does not match its sha256 in {BUNDLE_FILE}",
                hint="the copy is partial or was modified; package the model again",
            )
    heads: dict = {}
    if meta.get("heads"):
        from cscl.eval.heads import load_heads

        heads = load_heads(path / meta["heads"])
    return Bundle(path=path, meta=meta, heads=heads)


# ---- packaging: run dir (+ features, labels, embeddings) → bundle dir + .mar -------------------
MODEL_CONFIG_YAML = """# TorchServe per-model settings (written by cscl package)
minWorkers: {workers}
maxWorkers: {workers}
batchSize: {batch_size}
maxBatchDelay: {max_batch_delay}
responseTimeout: {response_timeout}
startupTimeout: 300
"""


def git_version() -> str:
    """Short commit of the working tree (+'.dirty'), or 'nogit'."""
    import subprocess

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return sha or "nogit"


def feature_preprocessing(
    features_dir: str | Path,
    extractor_hash: str,
    *,
    backbone_weights: str | Path | None = None,
    backbone_seed: int = 0,
    min_tissue: float = 0.25,
    tissue: dict | None = None,
    feature_dtype: str = "float16",
    features_only: bool = False,
) -> tuple[dict, dict]:
    """(backbone, preprocessing) for a bundle, read from the run's feature files and verified.

    The extraction settings that are not stored in feature files (min_tissue, tissue params,
    seed) come from the arguments; they are right only if they reproduce the files' extractor
    hash, which is checked, so a bundle never extracts slides differently from training.
    """
    from cscl.features import read_features
    from cscl.runtime import sha256_file as weights_sha
    from cscl.wsi.extract import ExtractConfig
    from cscl.wsi.extract import extractor_hash as ehash_of
    from cscl.wsi.tissue import TissueParams

    fdir = Path(features_dir)
    files = sorted(fdir.glob("*.h5")) if fdir.is_dir() else []
    sf = None
    for f in files:
        cand = read_features(f)
        if cand.extractor_hash == extractor_hash:
            sf = cand
            break
    if sf is None:
        raise InputError(
            f"no feature file of extractor {extractor_hash} under {fdir}",
            hint="pass --features DIR: the feature files the model was trained on",
        )
    ca = sf.coord_attrs
    pre = {
        "encoder": sf.encoder,
        "extractor_hash": extractor_hash,
        "input_dim": sf.dim,
        "target_mpp": float(ca["target_mpp"]),
        "patch_size": int(ca["patch_size"]),
        "min_tissue": float(min_tissue),
        "tissue": dict(tissue or TissueParams().as_dict()),
        "feature_dtype": feature_dtype,
        "slide_input": not features_only,
    }
    random_init = bool(sf.extra.get("random_init", False))
    backbone = {"name": sf.encoder, "weights": None, "random_init": random_init,
                "seed": int(backbone_seed)}  # fmt: skip
    if features_only:
        backbone["random_init"] = True  # never used: slide requests are refused
        return backbone, pre
    if backbone_weights is not None:
        backbone.update(weights=str(backbone_weights), random_init=False)
        digest = weights_sha(Path(backbone_weights))
    elif random_init:
        digest = f"random-seed{int(backbone_seed)}"
    else:
        raise InputError(
            f"the features come from backbone {sf.encoder!r} with weights, but no weights file "
            "was given",
            hint="pass --backbone-weights FILE, or --features-only to serve feature files only",
        )
    cfg = ExtractConfig(
        backbone=sf.encoder,
        allow_random=backbone["random_init"],
        seed=int(backbone_seed),
        target_mpp=pre["target_mpp"],
        patch_size=pre["patch_size"],
        min_tissue=float(min_tissue),
        tissue=TissueParams(**pre["tissue"]),
        feature_dtype=feature_dtype,
    )
    got = ehash_of(cfg, digest)
    if got != extractor_hash:
        raise InputError(
            f"these settings give extractor {got}, not the features' {extractor_hash} "
            f"(backbone {sf.encoder}, weights {digest[:16]}, {pre['target_mpp']} µm/px, "
            f"{pre['patch_size']} px, min_tissue {min_tissue}, seed {backbone_seed})",
            hint="pass the --min-tissue/--backbone-seed/--backbone-weights used by `cscl extract`",
        )
    return backbone, pre


def reference_inputs(
    embeddings_path: str | Path,
    labels: Any,
    features_dir: str | Path,
    run_model_version: str | None,
) -> tuple[Any, Any, Any]:
    """(meta, X, labels aligned to meta) from an embeddings table; checks the model version."""
    from cscl.embeddings import read_embeddings

    meta, X = read_embeddings(embeddings_path)
    if run_model_version and "model_version" in meta.columns:
        other = sorted(set(meta["model_version"].astype(str)) - {str(run_model_version)})
        if other:
            raise InputError(
                f"{embeddings_path} holds embeddings of model {other[0]}, not of the packaged "
                f"run ({run_model_version})",
                hint="run `cscl embed --model RUN_DIR` with this run first",
            )
    aligned = None
    if labels is not None:
        lab = labels.set_index("case_id")
        missing = sorted(set(meta["case_id"]) - set(lab.index))
        if missing:
            raise InputError(f"labels have no row for cases {missing[:5]}")
        aligned = lab.loc[meta["case_id"]].reset_index()
    return meta, X, aligned


def qc_records(features_dir: str | Path, slide_ids: list[str]) -> list[dict] | None:
    """The `qc` attribute of each slide's feature file, or None if any is missing."""
    import json as _json

    from cscl.features import feature_path, read_features

    out = []
    for sid in slide_ids:
        p = feature_path(features_dir, sid)
        if not p.exists():
            return None
        qc = read_features(p).extra.get("qc")
        qc = _json.loads(qc) if isinstance(qc, str | bytes) else qc
        if not isinstance(qc, dict):
            return None
        out.append(qc)
    return out


def build_mar(
    bundle_dir: str | Path,
    export_dir: str | Path,
    name: str,
    version: str,
    *,
    handler: str | Path | None = None,
    batch_size: int = 8,
    max_batch_delay: int = 50,
    response_timeout: int = 900,
    workers: int = 1,
) -> Path:
    """`<export_dir>/<name>.mar` with torch-model-archiver: handler + every bundle file."""
    import os
    import subprocess
    import sys
    import tempfile

    handler = Path(
        handler
        or Path(__file__).resolve().parent.parent / "cscl_platform" / "serving" / "handler.py"
    )
    if not handler.is_file():
        raise InputError(f"TorchServe handler not found: {handler}")
    bundle_dir, export_dir = Path(bundle_dir).resolve(), Path(export_dir).resolve()
    export_dir.mkdir(parents=True, exist_ok=True)
    extra = ",".join(str(p) for p in sorted(bundle_dir.iterdir()) if p.is_file())
    exe = Path(sys.executable).with_name("torch-model-archiver")
    with tempfile.TemporaryDirectory(prefix="cscl-mar-") as tmp:
        cfg = Path(tmp) / "model-config.yaml"
        cfg.write_text(
            MODEL_CONFIG_YAML.format(
                workers=workers,
                batch_size=batch_size,
                max_batch_delay=max_batch_delay,
                response_timeout=response_timeout,
            )
        )
        cmd = [str(exe) if exe.exists() else "torch-model-archiver", "--model-name", name,
               "--version", version, "--handler", f"{handler.with_suffix('')}:handle", "--extra-files", extra,
               "--config-file", str(cfg), "--export-path", tmp, "--force"]  # fmt: skip
        # the archiver stages files in $TMPDIR/<name>: a private TMPDIR avoids collisions
        env = {**os.environ, "TMPDIR": tmp}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise InputError(f"torch-model-archiver failed: {r.stderr.strip() or r.stdout}")
        out = export_dir / f"{name}.mar"
        with atomic_path(out) as part:
            shutil.copyfile(Path(tmp) / f"{name}.mar", part)
    return out


def cluster_config(name: str, mar: str, version: str = "1.0", *, batch_size: int = 8,
                   max_batch_delay: int = 20,
                   response_timeout: int = 900, workers: int = 1) -> str:  # fmt: skip
    """config.properties for TorchServe in a pod (KServe `storageUri` layout or the Deployment).

    Differs from cscl_platform/serving/config.properties (local, loopback) in three ways: inference (8080) and
    metrics (8082) listen on the pod address; the model is registered through `model_snapshot`,
    as KServe's TorchServe runtime expects; and token authorization is off, because TorchServe
    0.12 generates its keys inside the container where no client can read them — access is
    decided by the NetworkPolicy of manifests/base/serving and the ingress instead. The
    management API stays on 127.0.0.1 with the model API disabled; env-var config stays off so
    the runtime's TS_* variables cannot change any of this.
    """
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            name: {
                version: {
                    "defaultVersion": True,
                    "marName": mar,
                    "minWorkers": workers,
                    "maxWorkers": workers,
                    "batchSize": batch_size,
                    "maxBatchDelay": max_batch_delay,
                    "responseTimeout": response_timeout,
                }
            }
        },
    }
    return "\n".join(
        [
            "# written by cscl package: TorchServe inside a pod (see serving/config.properties)",
            "inference_address=http://0.0.0.0:8080",
            "management_address=http://127.0.0.1:8081",
            "metrics_address=http://0.0.0.0:8082",
            "grpc_inference_address=127.0.0.1",
            "grpc_management_address=127.0.0.1",
            "grpc_inference_port=7070",
            "grpc_management_port=7071",
            "enable_metrics_api=true",
            "metrics_mode=prometheus",
            "enable_model_api=false",
            "disable_token_authorization=true",
            "enable_envvars_config=false",
            "install_py_dep_per_model=false",
            "model_store=/mnt/models/model-store",
            "allowed_urls=file:///mnt/models/model-store/.*",
            f"default_response_timeout={response_timeout}",
            "max_request_size=268435456",
            "max_response_size=16777216",
            "job_queue_size=256",
            f"model_snapshot={json.dumps(snapshot, separators=(',', ':'))}",
            "",
        ]
    )


def upload_release(
    bundle_dir: str | Path,
    mar: str | Path | None,
    prefix: str,
    name: str,
    version: str,
    endpoint_url: str | None = None,
) -> str:
    """Upload `<prefix>/<name>/<version>/{model.mar, bundle/…, metrics.json, serving/…}`.

    `serving/` is the layout KServe's TorchServe runtime reads from `storageUri`
    (config/config.properties + model-store/<name>.mar); the plain Deployment uses it too.
    The bundle goes last-but-one and the KServe config last, so a reader that sees the config
    finds everything it points to.
    """
    from cscl.io import storage

    bundle_dir = Path(bundle_dir)
    safe = version.replace("+", "_")  # '+' is awkward in S3 keys and URLs
    dest = f"{prefix.rstrip('/')}/{name}/{safe}"
    meta = json.loads((bundle_dir / BUNDLE_FILE).read_text())
    for f in sorted(bundle_dir.iterdir()):
        if f.is_file() and f.name != BUNDLE_FILE:
            storage.upload(f, f"{dest}/bundle/{f.name}", endpoint_url)
    storage.upload(bundle_dir / BUNDLE_FILE, f"{dest}/bundle/{BUNDLE_FILE}", endpoint_url)
    if meta.get("metrics"):
        storage.write_bytes(
            f"{dest}/metrics.json", json.dumps(meta["metrics"], indent=2).encode(), endpoint_url
        )
    if mar is not None:
        storage.upload(Path(mar), f"{dest}/model.mar", endpoint_url)
        storage.upload(Path(mar), f"{dest}/serving/model-store/{name}.mar", endpoint_url)
        storage.write_bytes(
            f"{dest}/serving/config/config.properties",
            cluster_config(name, f"{name}.mar", version).encode(),
            endpoint_url,
        )
    return dest + "/"
