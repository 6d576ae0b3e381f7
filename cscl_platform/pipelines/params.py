"""The ONE list of pipeline parameters; the training and retraining signatures are made from it.

Why: KFP reads a pipeline's interface from its Python signature (types, defaults) and the
docstring's `Args:` section (descriptions shown in the UI). Written by hand, the two pipelines
repeated ~30 parameters and drifted apart. Here each parameter is declared once, with the
pipelines that take it; `pipeline_function(kind, body)` builds a function whose signature and
docstring KFP reads, and which hands the body one `Params` object instead of 30 arguments.

Add a parameter: one `Param(...)` line below (name, type, default, description, pipelines), then
use `p.<name>` in pipelines/training.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

TRAINING = "training"
RETRAINING = "retraining"
BOTH = frozenset({TRAINING, RETRAINING})
DEFAULT_TASKS = "subtype,er_status,her2_status,os"


@dataclass(frozen=True)
class Param:
    """One pipeline parameter: what KFP shows (type, default, description) and who takes it."""

    name: str
    type: type
    default: Any
    help: str
    pipelines: frozenset[str] = BOTH


PARAMS: tuple[Param, ...] = (
    Param("current_model_uri", str, "s3://cscl/models/cscl/current/",
          "Released model to compare against: `<prefix>/models/<name>/<version>/` (its bundle/).",
          frozenset({RETRAINING})),
    Param("manifest_uri", str, "s3://cscl/cohorts/default/manifest.csv",
          "Cohort manifest (CSV/Parquet; case_id, stain, slide_uri[, mpp]), local or s3://."),
    Param("labels_uri", str, "s3://cscl/cohorts/default/labels.csv",
          "Case labels table (case_id + task columns) used by validation and evaluation."),
    Param("project_prefix", str, "s3://cscl",
          "Object-store prefix of the project: features/<extractor-hash>/ and models/ go here."),
    Param("s3_endpoint", str, "",
          "S3 endpoint URL (MinIO, moto); empty = AWS_ENDPOINT_URL or AWS itself."),
    Param("transforms_uri", str, "",
          "Known H&E→IHC transforms (synthetic cohorts) to report registration error; optional."),
    Param("num_shards", int, 4, "Number of parallel feature-extraction tasks (dsl.ParallelFor)."),
    Param("min_pass_rate", float, 1.0,
          "Share of Great Expectations checks that must pass for the data gate to open."),
    Param("backbone", str, "resnet18", "timm patch-encoder name used for feature extraction."),
    Param("weights", str, "", "Patch-encoder weights (state-dict file or s3:// URI); empty = none."),
    Param("allow_random", bool, False,
          "Allow a random (seeded) patch encoder when no weights are given: tests and demos only."),
    Param("target_mpp", float, 1.0, "Patch resolution in µm per pixel."),
    Param("patch_size", int, 224, "Patch side in pixels."),
    Param("min_tissue", float, 0.25, "Minimum tissue share of a patch to keep it."),
    Param("skip_failed_slides", bool, False,
          "Go on when a slide fails extraction (it is listed and left out) instead of failing."),
    Param("adapter_epochs", int, 120, "Epochs of pretraining stage 1 (patch-wise adapter)."),
    Param("adapter_batch_size", int, 8, "Cases per batch in stage 1."),
    Param("pairs_per_case", int, 256, "Location-paired H&E/IHC patches sampled per case (stage 1)."),
    Param("slide_epochs", int, 120, "Epochs of pretraining stage 2 (slide encoder)."),
    Param("slide_batch_size", int, 24, "Cases per batch in stage 2."),
    Param("n_tokens", int, 2048, "Patches sampled per slide in stage 2."),
    Param("small_encoder", bool, False, "Use a small ABMIL slide encoder (CPU runs and tests)."),
    Param("tasks", str, DEFAULT_TASKS, "Comma-separated label tasks to evaluate (columns, `os`)."),
    Param("protocols", str, "fewshot,kfold,survival",
          "Comma-separated evaluation protocols: fewshot, kfold, survival."),
    Param("folds", int, 5, "Folds of the k-fold evaluation."),
    Param("n_boot", int, 1000, "Bootstrap resamples for confidence intervals."),
    Param("ks", str, "1,5,10,25", "Comma-separated shots per class of the few-shot protocol."),
    Param("min_score", float, 0.6,
          "Quality gate: package and deploy only if the evaluation score reaches this.",
          frozenset({TRAINING})),
    Param("min_gain_over_baseline", float, 0.0,
          "Quality gate: the score must also beat mean-pool's by more than this (-1: no check).",
          frozenset({TRAINING})),
    Param("score_metric", str, "kfold_auc",
          "Metric (per task, averaged) that decides whether the candidate beats the current model.",
          frozenset({RETRAINING})),
    Param("min_improvement", float, 0.0,
          "Promote the candidate only if its score exceeds the current model's by this much.",
          frozenset({RETRAINING})),
    Param("model_name", str, "cscl", "Model name: release path models/<name>/ and serving name."),
    Param("deploy_target", str, "none",
          "Where to deploy a released model: none, torchserve or kserve (see deploy component)."),
    Param("torchserve_management_url", str, "",
          "TorchServe management API URL (deploy_target=torchserve)."),
    Param("torchserve_model_store", str, "",
          "TorchServe model-store folder the .mar is copied to (deploy_target=torchserve)."),
    Param("seed", int, 0, "Seed of every random step (sharding is deterministic anyway)."),
)  # fmt: skip


def from_cohort_config(stated: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A cohort config's stated keys (`CohortConfig.stated()`, cscl/config.py) → the pipeline
    parameters they name, and the keys that are no pipeline parameter (local runs only).

    Why this works without a table: the config's keys are named as these parameters."""
    names = {p.name for p in PARAMS}
    return {k: v for k, v in stated.items() if k in names}, sorted(set(stated) - names)


def params_of(kind: str) -> tuple[Param, ...]:
    """The parameters pipeline `kind` ("training" | "retraining") declares, in signature order."""
    if kind not in BOTH:
        raise ValueError(f"unknown pipeline kind {kind!r}; choose one of {sorted(BOTH)}")
    return tuple(p for p in PARAMS if kind in p.pipelines)


def defaults(kind: str) -> dict[str, Any]:
    """Default value of every parameter of pipeline `kind`."""
    return {p.name: p.default for p in params_of(kind)}


class Params(SimpleNamespace):
    """The pipeline's parameters as attributes (`p.backbone`): KFP channels while compiling."""


def pipeline_function(kind: str, summary: str, body: Callable[[Params], Any]) -> Callable:
    """A function KFP can turn into a pipeline: its signature and `Args:` docstring come from
    `PARAMS`; calling it calls `body(Params(...))`.

    KFP builds the graph by calling the function positionally in signature order
    (`GraphComponent.__init__`), and kfp.local by keyword, so both are accepted.
    """
    specs = params_of(kind)
    names = [p.name for p in specs]
    sig = inspect.Signature(
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=p.default,
                annotation=p.type,
            )
            for p in specs
        ]  # fmt: skip
    )

    def pipeline(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return body(Params(**{n: bound.arguments[n] for n in names}))

    pipeline.__signature__ = sig
    pipeline.__name__ = pipeline.__qualname__ = kind
    pipeline.__doc__ = "\n".join(
        [summary, "", "Args:", *(f"    {p.name}: {p.help}" for p in specs)]
    )
    return pipeline
