"""Slide or patch features → embedding, predictions, top patches and QC. No server imports.

`Predictor` is what TorchServe's handler (cscl_platform/serving/handler.py), `cscl predict
--bundle` and any other host call. It loads a model bundle once and checks every input against
the bundle's preprocessing (feature dimension, extractor hash, encoder) so features from another
backbone or resolution are refused with a clear `InputError` instead of producing confident
nonsense. `Predictor.run` answers a batch of `Request`s (cscl.inference_request) with one
`Result` each: the answer, or the error (with its `kind`) that request alone ran into.

Every request runs within a budget (`cscl.inference_request.RequestPolicy`): a whole slide whose
patch grid, pixels to read or extraction time would exceed it is stopped with TOO_LARGE (413)
and a message naming the limit, so one request cannot hold the worker until the frontend's
response timeout while the requests queued behind it time out.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cscl.bundle import Bundle, load_bundle
from cscl.errors import CsclError, ErrorKind, InputError, SlideError
from cscl.eval.heads import apply_heads
from cscl.eval.triage_head import triage_decisions
from cscl.features import SlideFeatures, read_features
from cscl.inference_request import (
    DEFAULT_MAX_BYTES,
    MPP_RANGE,
    Request,
    RequestPolicy,
    check_feature_file_budget,
)
from cscl.io import storage
from cscl.io.manifest import slide_id_from_uri
from cscl.runtime import jsonable, pick_device
from cscl.wsi.encoders import load_encoder
from cscl.wsi.extract import ExtractConfig, extractor_hash, features_in_memory
from cscl.wsi.patching import patch_size_level0
from cscl.wsi.readers import SlideReader, open_slide
from cscl.wsi.tissue import TissueParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One request's outcome: `answer` (the Inference API dict) or `error` (kind + message)."""

    request: Request | None
    answer: dict | None = None
    error: CsclError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, exc: BaseException, request: Request | None = None) -> Result:
        """A failed request; anything that is not a CsclError is a bug (kind INTERNAL)."""
        if not isinstance(exc, CsclError):
            log.error("request %s failed unexpectedly", request, exc_info=exc)
            exc = CsclError(f"internal error: {type(exc).__name__}: {exc}", kind=ErrorKind.INTERNAL)
        return cls(request, error=exc)


def _qc_of(sf: SlideFeatures) -> dict:
    """QC dict from the feature file's `qc` root attribute (JSON), else what the coords say."""
    qc = sf.extra.get("qc")
    if isinstance(qc, str | bytes):
        try:
            qc = json.loads(qc)
        except json.JSONDecodeError:
            qc = None
    if isinstance(qc, dict):
        return qc
    mpp = sf.coord_attrs.get("mpp_level0")
    out: dict[str, Any] = {"source": "none: the feature file has no qc attribute"}
    if mpp is not None and not (isinstance(mpp, float) and math.isnan(mpp)):
        out["mpp"] = float(mpp)
    return out


def _over_budget(message: str, hint: str) -> InputError:
    return InputError(message, hint=hint, kind=ErrorKind.TOO_LARGE)


class SlideBudget:
    """The work one whole-slide request may cause: checked before the patch grid is built
    (grid size from the slide's dimensions and resolution), once the grid is known (patches,
    pixels to read) and after every batch of patches (time)."""

    def __init__(self, policy: RequestPolicy, name: str):
        self.policy, self.name = policy, name
        self.deadline = time.monotonic() + policy.max_seconds
        self.read_size = 1

    def check_slide(self, wsi: SlideReader, cfg: ExtractConfig) -> None:
        lo, hi = MPP_RANGE
        if not lo <= wsi.mpp <= hi:
            raise InputError(
                f"{self.name} reports {wsi.mpp:g} µm/px, outside a microscope's range "
                f"[{lo}, {hi}]: its resolution tags are missing or wrong",
                hint="send the slide's real resolution as 'mpp' (0.25 at 40x, 0.5 at 20x)",
            )
        ps0 = patch_size_level0(cfg.patch_size, cfg.target_mpp, wsi.mpp)
        cells = (wsi.width // max(ps0, 1)) * (wsi.height // max(ps0, 1))
        level = wsi.best_level_for_downsample(ps0 / cfg.patch_size)
        self.read_size = max(1, round(ps0 / wsi.level_downsamples[level]))
        if cells > 25 * self.policy.max_patches:
            raise _over_budget(
                f"{self.name} at {wsi.mpp:g} µm/px is a grid of {cells} patch positions "
                f"({wsi.width}x{wsi.height} px, {ps0} px per patch): above this server's limit "
                f"of {self.policy.max_patches} patches",
                hint="check the slide's resolution (or the 'mpp' you sent); extract large "
                "slides with `cscl extract` and send the feature file",
            )

    def on_grid(self, n: int) -> None:
        pixels = n * self.read_size**2
        if n > self.policy.max_patches:
            raise _over_budget(
                f"{self.name} has {n} tissue patches, above this server's limit of "
                f"{self.policy.max_patches}",
                hint="check the slide's resolution; extract it with `cscl extract` and send the "
                "feature file, or ask the operator to raise CSCL_MAX_PATCHES",
            )
        if pixels > self.policy.max_read_pixels:
            raise _over_budget(
                f"{self.name} needs {pixels} pixels read ({n} patches of {self.read_size} px), "
                f"above this server's limit of {self.policy.max_read_pixels}",
                hint="the slide has no pyramid level near the model's resolution; extract it "
                "with `cscl extract` and send the feature file",
            )
        self.on_batch(0)

    def on_batch(self, _: int) -> None:
        if time.monotonic() > self.deadline:
            raise _over_budget(
                f"{self.name} needs more than this server's {self.policy.max_seconds:g} s per "
                "whole-slide request",
                hint="extract the slide with `cscl extract` and send the feature file, or ask "
                "the operator to raise CSCL_MAX_SECONDS",
            )


class Predictor:
    """Loads a bundle once; predicts from SlideFeatures (single or batched) or a whole slide."""

    def __init__(
        self,
        bundle_dir: str | Path,
        device: str | None = None,
        *,
        top_k: int = 8,
        verify: bool = True,
        warmup: bool = True,
    ):
        self.bundle: Bundle = load_bundle(bundle_dir, verify=verify)
        self.device = str(pick_device(device))
        self.model = self.bundle.load_model(self.device)
        self.heads = self.bundle.heads
        self.top_k = int(top_k)
        self.pre = self.bundle.preprocessing
        self.input_dim = self.bundle.input_dim or self.model.input_dim
        self._encoder = None
        if warmup:
            self.warmup()

    def warmup(self) -> None:
        """One prediction on random features: the first real request pays no lazy imports."""
        if not self.input_dim:
            return
        x = np.random.default_rng(0).normal(size=(4, self.input_dim)).astype(np.float32)
        emb, _ = self.model.embed(x)
        if self.heads:
            apply_heads(self.heads, emb.astype(np.float64))

    @property
    def model_version(self) -> str:
        return self.bundle.version

    # ---- validation -------------------------------------------------------------------------
    def validate(self, sf: SlideFeatures, source: str = "features") -> None:
        """Refuse features the model was not trained on (InputError naming the mismatch)."""
        f = sf.features
        if f.ndim != 2 or f.shape[0] == 0:
            raise InputError(
                f"{source} holds no patches (features shape {tuple(f.shape)})",
                hint="the slide has no tissue at the model's settings; check the slide",
            )
        if sf.coords.shape != (f.shape[0], 2):
            raise InputError(
                f"{source}: coords {tuple(sf.coords.shape)} do not match features {tuple(f.shape)}"
            )
        if self.input_dim is not None and f.shape[1] != self.input_dim:
            raise InputError(
                f"{source} has feature dimension {f.shape[1]} but model {self.model_version} "
                f"expects {self.input_dim} ({self.pre.get('encoder')} features)",
                hint=f"extract features with backbone {self.pre.get('encoder')!r} "
                f"(extractor {self.pre.get('extractor_hash')})",
            )
        want = self.pre.get("extractor_hash")
        if want and sf.extractor_hash != want:
            raise InputError(
                f"{source} comes from extractor {sf.extractor_hash or 'unknown'!r} "
                f"(encoder {sf.encoder!r}) but model {self.model_version} needs extractor "
                f"{want!r} (encoder {self.pre.get('encoder')!r}, "
                f"{self.pre.get('target_mpp')} µm/px, {self.pre.get('patch_size')} px patches)",
                hint="extract the slide again with the model's backbone and settings"
                + (
                    "; a TRIDENT/CLAM file: bring it in with `cscl import-features` first"
                    if not sf.extractor_hash
                    else ""
                ),
            )
        if not np.isfinite(f).all():
            raise InputError(f"{source} contains NaN or infinite feature values")

    # ---- prediction ---------------------------------------------------------------------------
    def _result(self, sf: SlideFeatures, emb: np.ndarray, attn: np.ndarray, qc=None) -> dict:
        k = min(self.top_k, len(attn))
        order = np.argsort(-attn, kind="stable")[:k]
        top = [
            {"x": int(sf.coords[i, 0]), "y": int(sf.coords[i, 1]), "attention": float(attn[i])}
            for i in order
        ]
        preds = apply_heads(self.heads, emb.astype(np.float64)) if self.heads else {}
        answer = {
            "model_name": self.bundle.name,
            "model_version": self.model_version,
            "slide_id": sf.slide_id,
            "n_patches": int(len(attn)),
            "patch_size_level0": sf.patch_size_level0 or None,
            "embedding": [float(v) for v in emb],
            "predictions": preds,
            "top_patches": top,
            "qc": qc if qc is not None else _qc_of(sf),
        }
        triage = triage_decisions(self.heads, emb) if self.heads else {}
        if triage:  # bundles without triage (older, or too few cases) answer as before
            answer["triage"] = triage
        return jsonable(answer)

    def predict_features(self, sf: SlideFeatures) -> dict:
        """One slide's features → the Inference API answer (see docs/CONTRACTS.md)."""
        return self.predict_many([sf])[0]

    def predict_many(self, batch: list[SlideFeatures]) -> list[dict]:
        """Several slides; heads are applied to the stacked embeddings in one call."""
        for sf in batch:
            self.validate(sf, f"features of {sf.slide_id}")
        pairs = self.model.embed_batch([sf.features.astype(np.float32) for sf in batch])
        return [self._result(sf, e, a) for sf, (e, a) in zip(batch, pairs, strict=True)]

    # ---- whole slides -----------------------------------------------------------------------
    def extract_config(self):
        """The ExtractConfig that reproduces the training features (checked by its hash)."""
        bb, pre = self.bundle.backbone, self.pre
        weights = self.bundle.backbone_weights
        return ExtractConfig(
            backbone=bb["name"],
            weights=str(weights) if weights else None,
            allow_random=bool(bb.get("random_init")),
            seed=int(bb.get("seed", 0)),
            target_mpp=float(pre["target_mpp"]),
            patch_size=int(pre["patch_size"]),
            min_tissue=float(pre.get("min_tissue", 0.25)),
            tissue=TissueParams(**(pre.get("tissue") or {})),
            feature_dtype=str(pre.get("feature_dtype", "float16")),  # old bundles: float16
            encoder_spec=pre.get("encoder_spec"),  # the spec the features were made with
            precision=str(pre.get("precision", "fp32")),  # bundles before it existed: fp32
            batch_size=int(pre.get("batch_size", 32)),
            num_workers=0,  # inside a server worker: no extra processes
            device=self.device,
        )

    @property
    def encoder(self):
        """The patch backbone, loaded on first slide request (feature requests never need it)."""
        if self._encoder is None:
            cfg = self.extract_config()
            self._encoder = load_encoder(
                cfg.backbone,
                cfg.weights,
                cfg.allow_random,
                self.device,
                seed=cfg.seed,
                spec=cfg.encoder_spec,  # rebuild the recorded encoder, not today's registry entry
            )
        return self._encoder

    def slide_features(
        self, uri: str, mpp: float | None = None, policy: RequestPolicy | None = None
    ) -> SlideFeatures:
        """Tissue detection → patch grid → backbone, exactly as `cscl extract` did for training,
        within the policy's budget (patches, pixels, seconds) when one is given: served requests
        (`run`) always have one; `cscl predict --bundle` on the operator's own slide has none."""
        if not self.pre.get("slide_input", True):
            raise InputError(
                f"model {self.model_version} was packaged for feature files only; slides refused",
                hint="send the slide's feature file, or package with the backbone weights",
            )
        if not storage.is_s3(uri) and not storage.local_path(uri).exists():
            raise SlideError(
                f"slide file not found: {uri}", hint="check the slide_uri", kind=ErrorKind.NOT_FOUND
            )
        cfg = self.extract_config()
        enc = self.encoder
        ehash = extractor_hash(cfg, enc.weights_digest)
        if ehash != self.pre["extractor_hash"]:
            raise InputError(
                f"bundle {self.bundle.path} cannot reproduce its training features "
                f"(extractor {ehash} != {self.pre['extractor_hash']})",
                hint="package the model again with the extraction settings of its features",
            )
        with tempfile.TemporaryDirectory(prefix="cscl-slide-") as tmp:
            local = uri
            if storage.is_s3(uri):  # a private copy, deleted after the request (no cache growth)
                name = uri.rstrip("/").rsplit("/", 1)[-1] or "slide"
                local = str(storage.download(uri, Path(tmp) / name))
            try:
                with open_slide(local, mpp=mpp) as wsi:
                    budget = SlideBudget(policy, uri) if policy is not None else None
                    if budget is not None:
                        budget.check_slide(wsi, cfg)
                    return features_in_memory(
                        wsi,
                        cfg,
                        enc,
                        slide_id=slide_id_from_uri(uri),
                        on_grid=budget.on_grid if budget else None,
                        on_batch=budget.on_batch if budget else None,
                    )
            except CsclError as exc:  # name the client's URI, not our temporary copy
                if local == uri:
                    raise
                raise exc.naming(local, uri) from None

    def predict_slide(
        self, uri: str, mpp: float | None = None, policy: RequestPolicy | None = None
    ) -> dict:
        """A whole H&E slide (local path, file:// or s3://) → the Inference API answer."""
        t0 = time.perf_counter()
        sf = self.slide_features(uri, mpp, policy)
        t1 = time.perf_counter()
        out = self.predict_features(sf)
        out["timing_ms"] = {
            "features": round((t1 - t0) * 1000, 1),
            "model": round((time.perf_counter() - t1) * 1000, 1),
        }
        return out

    # ---- requests (any host: TorchServe, CLI, tests) --------------------------------------------
    def request_features(
        self,
        req: Request,
        max_bytes: int = DEFAULT_MAX_BYTES,
        policy: RequestPolicy | None = None,
    ) -> SlideFeatures:
        """SlideFeatures of an upload (parsed in memory: no temporary file) or a features_uri
        (size-checked; temp copies removed). Uploads were checked against the budget by
        parse_request; referenced files are here."""
        if req.source == "upload":
            try:
                sf = read_features(io.BytesIO(req.data or b""), name="upload.h5")
            except CsclError as exc:  # name what the client sent
                raise exc.naming("upload.h5", req.describe()) from None
            self.validate(sf, req.describe())
            return sf
        with tempfile.TemporaryDirectory(prefix="cscl-req-") as tmp:
            if not storage.is_s3(req.uri) and not storage.local_path(req.uri).exists():
                raise InputError(f"feature file {req.uri} not found", kind=ErrorKind.NOT_FOUND)
            info = storage.stat(req.uri)
            if info.size > max_bytes:
                raise InputError(
                    f"{req.uri} is {info.size} bytes, above the limit of {max_bytes} bytes",
                    kind=ErrorKind.TOO_LARGE,
                )
            if storage.is_s3(req.uri):
                path = storage.download(req.uri, Path(tmp) / "features.h5")
            else:
                path = storage.local_path(req.uri)
            check_feature_file_budget(path, policy or RequestPolicy(), req.describe())
            try:
                sf = read_features(path)
            except CsclError as exc:  # name what the client sent, not our temporary copy
                raise exc.naming(str(path), req.describe()) from None
        self.validate(sf, req.describe())
        return sf

    def run(
        self,
        requests: Sequence[Request | CsclError],
        *,
        max_bytes: int | None = None,
        policy: RequestPolicy | None = None,
    ) -> list[Result]:
        """One Result per request, in order. A request that fails (or arrived as an error from
        parsing) never fails the others: feature requests are predicted as one batch, and one at
        a time only if the batch fails, to find the one at fault. `policy` is each request's
        budget (default `RequestPolicy()`); `max_bytes` overrides its size limit."""
        policy = policy or RequestPolicy()
        if max_bytes is not None:
            policy = dataclasses.replace(policy, max_bytes=max_bytes)
        results: list[Result | None] = [None] * len(requests)
        feats: dict[int, SlideFeatures] = {}
        for i, req in enumerate(requests):
            if isinstance(req, CsclError):
                results[i] = Result(None, error=req)
            elif req.source != "slide_uri":
                try:
                    feats[i] = self.request_features(req, policy.max_bytes, policy)
                except Exception as exc:
                    results[i] = Result.failed(exc, req)
        if feats:
            try:
                answers = self.predict_many(list(feats.values()))
            except Exception:
                answers = None
            for n, (i, sf) in enumerate(feats.items()):
                req = requests[i]
                if answers is not None:
                    results[i] = Result(req, answer=answers[n])
                    continue
                try:
                    results[i] = Result(req, answer=self.predict_features(sf))
                except Exception as exc:
                    results[i] = Result.failed(exc, req)
        for i, req in enumerate(requests):
            if results[i] is None:  # slide requests: one at a time (each is minutes of work)
                try:
                    results[i] = Result(req, answer=self.predict_slide(req.uri, req.mpp, policy))
                except Exception as exc:
                    results[i] = Result.failed(exc, req)
        return [r for r in results if r is not None]
