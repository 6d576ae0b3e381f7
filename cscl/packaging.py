"""A trained run (+ its feature files, labels, embeddings) → a model bundle directory.

What goes in (docs/CONTRACTS.md "Model bundle directory"): the run's weights, task heads fitted on
the run's embeddings and labels, the preprocessing read from — and checked against — the feature
files' extractor hash (so serving extracts slides exactly like training did), and the reference
set drift monitoring compares served requests with. No server here: the TorchServe archive and the
release upload are `cscl_platform.serving.package`, which calls `build_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cscl import __version__
from cscl.bundle import REFERENCE_FILE, Bundle, load_bundle, save_bundle
from cscl.embeddings import read_embeddings
from cscl.errors import InputError
from cscl.eval.heads import apply_heads, fit_heads
from cscl.eval.tasks import parse_tasks
from cscl.eval.triage import check_sensitivity
from cscl.eval.triage_head import DEFAULT_TRIAGE_SENSITIVITY, with_triage
from cscl.features import feature_path, read_features
from cscl.io.manifest import load_labels
from cscl.monitoring.reference import write_reference
from cscl.runtime import git_commit, sha256_file
from cscl.train.checkpoint import read_config
from cscl.wsi.extract import ExtractConfig
from cscl.wsi.extract import extractor_hash as extractor_hash_of
from cscl.wsi.tissue import TissueParams

log = logging.getLogger(__name__)

DEFAULT_TASKS = "er_status,pgr_status,her2_status,ki67_status,subtype,os"


def default_version(run_dir: str | Path) -> str:
    """`<cscl version>+<12 hex of the run's weights>`: the same weights give the same version
    wherever and whenever they are packaged; retrained weights give a new one. Why not a git
    commit: the caller's checkout (or none) says nothing about the model being released.

    The hash is over the run's weights files (config.json `files`, in name order), their
    contents only, so copying or re-packaging a run does not change it.
    """
    run = Path(run_dir)
    files = read_config(run).get("files") or {}
    if not files:
        raise InputError(f"run {run} names no weights files", hint="rerun `cscl pretrain`")
    digest = hashlib.sha256()
    for name in sorted(files):
        path = run / files[name]
        if not path.is_file():
            raise InputError(f"run {run} lacks {files[name]}", hint="rerun `cscl pretrain`")
        digest.update(f"{name}:{sha256_file(path)}\n".encode())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def feature_preprocessing(
    features_dir: str | Path,
    extractor_hash: str,
    *,
    backbone_weights: str | Path | None = None,
    backbone_seed: int = 0,
    min_tissue: float = 0.25,
    tissue: dict | None = None,
    feature_dtype: str | None = None,
    features_only: bool = False,
) -> tuple[dict, dict]:
    """(backbone, preprocessing) for a bundle, read from the run's feature files and verified.

    The extraction settings that are not stored in feature files (min_tissue, tissue params,
    seed) come from the arguments; they are right only if they reproduce the files' extractor
    hash, which is checked, so a bundle never extracts slides differently from training.
    """
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
    feature_dtype = feature_dtype or str(sf.features.dtype)  # the dtype is in the hash
    spec = sf.extra.get("encoder_spec")
    spec = json.loads(spec) if isinstance(spec, str) else spec
    pre = {
        "encoder": sf.encoder,
        "extractor_hash": extractor_hash,
        "input_dim": sf.dim,
        "target_mpp": float(ca["target_mpp"]),
        "patch_size": int(ca["patch_size"]),
        "min_tissue": float(min_tissue),
        "tissue": dict(tissue or TissueParams().as_dict()),
        "feature_dtype": feature_dtype,
        "precision": str(sf.extra.get("precision", "fp32")),  # files before it existed: fp32
        "slide_input": not features_only,
    }
    if spec:
        pre["encoder_spec"] = spec  # serving rebuilds exactly this encoder
    random_init = bool(sf.extra.get("random_init", False))
    backbone = {"name": sf.encoder, "weights": None, "random_init": random_init,
                "seed": int(backbone_seed)}  # fmt: skip
    if features_only:
        backbone["random_init"] = True  # never used: slide requests are refused
        return backbone, pre
    if sf.extra.get("imported_from"):
        raise InputError(
            f"the features under {fdir} were imported (`cscl import-features`, encoder "
            f"{sf.encoder!r}): cscl cannot extract slides the way they were made",
            hint="package with --features-only (the model then serves feature files)",
        )
    if backbone_weights is not None:
        backbone.update(weights=str(backbone_weights), random_init=False)
        digest = sha256_file(Path(backbone_weights))
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
        precision=pre["precision"],
        encoder_spec=spec,
    )
    got = extractor_hash_of(cfg, digest)
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
    labels: pd.DataFrame | None,
    run_model_version: str | None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None]:
    """(meta, X, labels aligned to meta) from an embeddings table; checks the model version."""
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


def qc_records(
    features_dir: str | Path, slide_ids: list[str]
) -> tuple[list[dict | None], list[str]]:
    """(the `qc` attribute of each slide's feature file or None, why each None).

    One missing, truncated or QC-less file leaves that slide out of the reference set (named in
    the second list) instead of stopping the packaging or dropping the whole set.
    """
    out: list[dict | None] = []
    failed: list[str] = []
    for sid in slide_ids:
        p = feature_path(features_dir, sid)
        try:
            if not p.exists():
                raise InputError(f"no feature file {p}")
            qc = read_features(p).extra.get("qc")
            qc = json.loads(qc) if isinstance(qc, str | bytes) else qc
            if not isinstance(qc, dict):
                raise InputError("the feature file has no `qc` attribute")
        except (InputError, ValueError) as err:
            failed.append(f"{sid} ({err})")
            qc = None
        out.append(qc)
    return out, failed


def _heads_and_reference(
    embeddings: str | Path,
    labels_uri: str | None,
    features_dir: str | Path,
    run_model_version: str | None,
    tasks: str,
    seed: int,
    n_iter: int,
    triage_sensitivity: float | None = DEFAULT_TRIAGE_SENSITIVITY,
) -> tuple[dict | None, dict[str, Any] | None]:
    """(heads fitted on the run's embeddings, write_reference kwargs or None). IHC-status heads
    carry their triage operating point at `triage_sensitivity` (cscl.eval.triage_head; None or
    0: none)."""
    labels = load_labels(labels_uri) if labels_uri else None
    meta, X, aligned = reference_inputs(embeddings, labels, run_model_version)
    heads = None
    preds: list[dict] = [{} for _ in range(len(X))]
    label_cols = None
    if aligned is not None:
        task_list = parse_tasks(tasks, aligned)
        heads = fit_heads(X, aligned, task_list, seed=seed, n_iter=n_iter)
        if triage_sensitivity:
            heads, _ = with_triage(
                heads, X, aligned, task_list, triage_sensitivity, seed=seed, n_iter=n_iter
            )
        preds = [apply_heads(heads, x.astype(np.float64)) for x in X]
        label_cols = {t.name: aligned[t.name].tolist() for t in task_list if t.name in aligned}
    slide_ids = meta["slide_id"].astype(str).tolist()
    qcs, failed = qc_records(features_dir, slide_ids)
    keep = [i for i, q in enumerate(qcs) if q is not None]
    if failed:
        log.warning(
            "%d slide(s) left out of the monitoring reference set: %s%s",
            len(failed), failed[:5], " …" if len(failed) > 5 else "",
        )  # fmt: skip
    if not keep:
        log.warning(
            "no feature file has a readable `qc` attribute; no reference set for monitoring"
        )
        return heads, None
    ref = dict(
        embeddings=X[keep],
        predictions=[preds[i] for i in keep],
        qc_records=[qcs[i] for i in keep],
        slide_ids=[slide_ids[i] for i in keep],
        labels={k: [v[i] for i in keep] for k, v in label_cols.items()}
        if label_cols
        else label_cols,
    )
    return heads, ref


@dataclass(frozen=True)
class BundleSpec:
    """What a bundle holds besides the trained run (one declaration for the CLI, the component
    and the platform's `package_model`).

    labels (a labels table URI) needs `embeddings` (`cscl embed` of this run): heads are fitted on
    them. With embeddings whose feature files carry `qc`, the reference set for drift
    monitoring is written too. `triage_sensitivity`: the operating point of the served IHC
    triage of binary `<marker>_status` heads (cscl.eval.triage_head); None or 0: no triage.
    """

    features_dir: str | Path | None = None
    labels: str | None = None
    embeddings: str | Path | None = None
    tasks: str = DEFAULT_TASKS
    name: str = "cscl"
    version: str | None = None
    backbone_weights: str | Path | None = None
    backbone_seed: int = 0
    min_tissue: float = 0.25
    features_only: bool = False
    metrics: dict | None = None
    seed: int = 0
    n_iter: int = 10
    triage_sensitivity: float | None = DEFAULT_TRIAGE_SENSITIVITY


def build_bundle(
    run_dir: str | Path, out_dir: str | Path, spec: BundleSpec = BundleSpec()
) -> Bundle:
    """Write the bundle of a trained run to `out_dir`; returns it (loaded, not re-hashed)."""
    features_dir, labels, embeddings = spec.features_dir, spec.labels, spec.embeddings
    tasks, name, version, seed, n_iter = spec.tasks, spec.name, spec.version, spec.seed, spec.n_iter
    metrics = spec.metrics
    if spec.triage_sensitivity:
        check_sensitivity(spec.triage_sensitivity)  # a typo fails before any fitting
    cfg = read_config(run_dir)
    data = cfg.get("data") or {}
    features = features_dir or data.get("features_dir")
    if not features or not data.get("extractor_hash"):
        raise InputError(
            f"run {run_dir} does not name its feature files", hint="pass --features DIR"
        )
    if labels and not embeddings:
        raise InputError("--labels needs --embeddings (from `cscl embed --model RUN_DIR`)")
    backbone, pre = feature_preprocessing(
        features,
        data["extractor_hash"],
        backbone_weights=spec.backbone_weights,
        backbone_seed=spec.backbone_seed,
        min_tissue=spec.min_tissue,
        features_only=spec.features_only,
    )
    version = version or default_version(run_dir)
    out = Path(out_dir)
    heads, reference = None, None
    if embeddings:
        heads, ref_args = _heads_and_reference(
            embeddings,
            labels,
            features,
            cfg.get("model_version"),
            tasks,
            seed,
            n_iter,
            spec.triage_sensitivity,
        )
        if ref_args is not None:
            out.mkdir(parents=True, exist_ok=True)
            reference = write_reference(out / REFERENCE_FILE, model_version=version, **ref_args)
    save_bundle(
        out,
        run_dir,
        heads,
        backbone,
        pre,
        version,
        data.get("fingerprint"),
        metrics,
        reference,
        name=name,
        git_commit=git_commit(short=True),
    )
    return load_bundle(out, verify=False)
