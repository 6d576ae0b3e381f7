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
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cscl.errors import InputError
from cscl.eval.heads import load_heads, save_heads
from cscl.io.storage import atomic_path
from cscl.runtime import sha256_file
from cscl.train.checkpoint import load_trained, read_config

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "cscl-bundle/1"
HEADS_FILE = "heads.json"
BACKBONE_FILE = "backbone.pth"
REFERENCE_FILE = "reference.parquet"
RUN_CONFIG = "config.json"
PREPROCESSING_KEYS = ("target_mpp", "patch_size", "extractor_hash", "encoder")


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
        if head.get("triage"):  # the served IHC triage's operating point (cscl.eval.triage_head)
            tri = head["triage"]
            out[task]["triage"] = {
                k: tri[k] for k in ("positive_class", "target_sensitivity", "threshold")
            }
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
        heads = load_heads(path / meta["heads"])
    return Bundle(path=path, meta=meta, heads=heads)
