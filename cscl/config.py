"""The cohort config: one YAML file that describes a cohort run (data, encoder, training,
evaluation, serving) for `cscl run --config FILE`, `cscl --config FILE <command>` and
`cscl pipeline run-local|submit --config FILE`.

Why one schema, declared here once: the keys, their types, defaults and help feed the loader
(unknown keys and wrong types are errors naming the key), the template `cscl config init` prints,
and the mapping onto command options (each command's `CONFIG`) and pipeline parameters. Keys are
named as the pipeline parameters (cscl_platform/pipelines/params.py) wherever one exists, and each
key name is unique across sections, so a file flattens to one `{key: value}` vocabulary.

Add a key: one `Field` in its section below (default, description = the help line); then map it
onto a command option in that command's `CONFIG` (cscl/commands/<name>.py).
"""

from __future__ import annotations

import difflib
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from cscl.errors import InputError

DEFAULT_TASKS = "subtype,er_status,her2_status,os"


class _Section(BaseModel):
    """A block of keys: unknown keys are errors; numbers are accepted where text is expected."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _comma_list(value: Any) -> Any:
    """`[a, b]` in YAML means the same as `a,b` (the form the pipeline parameters take)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


class Data(_Section):
    """The cohort and how slides become patch features."""

    manifest_uri: str = Field(
        "",
        description="Cohort manifest (CSV/Parquet; case_id, stain, slide_uri[, mpp]), local or "
        "s3://.",
        json_schema_extra={"example": "data/cohort/manifest.csv"},
    )
    labels_uri: str = Field(
        "",
        description="Case labels table (case_id + task columns) for evaluation and task heads; "
        "empty = no evaluation.",
        json_schema_extra={"example": "data/cohort/labels.csv"},
    )
    project_prefix: str = Field(
        "",
        description="Object-store prefix of the project (`cscl extract --store`, the pipelines): "
        "features/<extractor-hash>/ and models/ go here. `cscl run` keeps its files under `out`.",
    )
    transforms_uri: str = Field(
        "",
        description="Known H&E→IHC transforms (synthetic cohorts) to report registration error; "
        "empty = transforms.csv beside the manifest when present.",
    )
    target_mpp: float = Field(1.0, description="Patch resolution in µm per pixel.")
    patch_size: int = Field(224, description="Patch side in pixels.")
    min_tissue: float = Field(0.25, description="Minimum tissue share of a patch to keep it.")
    skip_failed_slides: bool = Field(
        False,
        description="Go on when a slide fails extraction (it is listed and left out) instead of "
        "failing.",
    )


class Encoder(_Section):
    """The patch encoder that turns patches into features."""

    backbone: str = Field(
        "resnet18",
        description="Patch encoder: a name from `cscl encoders`, timm:<model>[?k=v&…], or a timm "
        "model name.",
    )
    weights: str = Field(
        "", description="Patch-encoder weights (state-dict file or s3:// URI); empty = none."
    )
    allow_random: bool = Field(
        False,
        description="Allow a random (seeded) patch encoder when no weights are given: tests and "
        "demos only.",
    )


class Training(_Section):
    """Pretraining: stage 1 (patch-wise adapter) and stage 2 (slide encoder)."""

    preset: str = Field(
        "",
        description="quick = a few epochs, fewer tokens, small ABMIL (minutes on a laptop); "
        "paper = the paper's T=0.001, GOT and plain adapter; keys stated here still win; "
        "empty = the benchmark-backed recipe (docs/METHOD-NOTES.md).",
    )
    objective: str = Field(
        "cscl",
        description="Stage-2 objective: cscl (after the stage-1 adapter), madeleine, "
        "histostainalign, supervised.",
    )
    label_task: str = Field(
        "", description="Label column the supervised and histostainalign objectives learn."
    )
    adapter_epochs: int = Field(120, description="Epochs of pretraining stage 1 (adapter).")
    adapter_batch_size: int = Field(8, description="Cases per batch in stage 1.")
    pairs_per_case: int = Field(
        256, description="Location-paired H&E/IHC patches sampled per case (stage 1)."
    )
    slide_epochs: int = Field(120, description="Epochs of pretraining stage 2 (slide encoder).")
    slide_batch_size: int = Field(24, description="Cases per batch in stage 2.")
    n_tokens: int = Field(2048, description="Patches sampled per slide in stage 2.")
    small_encoder: bool = Field(
        False, description="Use a small ABMIL slide encoder (CPU runs and tests)."
    )


class Evaluation(_Section):
    """Evaluation of the H&E slide embeddings on the labels."""

    tasks: str = Field(
        DEFAULT_TASKS,
        description="Comma-separated label tasks to evaluate and fit heads for (columns, `os`).",
    )
    protocols: str = Field(
        "fewshot,kfold,survival",
        description="Comma-separated evaluation protocols: fewshot, kfold, survival.",
    )
    folds: int = Field(5, description="Folds of the k-fold evaluation.")
    n_boot: int = Field(1000, description="Bootstrap resamples for confidence intervals.")
    ks: str = Field("1,5,10,25", description="Comma-separated shots per class (few-shot).")
    score_metric: str = Field(
        "kfold_auc", description="Metric (per task, averaged) of the quality score."
    )

    _lists = field_validator("tasks", "protocols", "ks", mode="before")(_comma_list)


class Serving(_Section):
    """The released model: bundle name and version, and the quality gate before packaging."""

    model_name: str = Field(
        "cscl", description="Model name: release path models/<name>/ and serving name."
    )
    version: str = Field(
        "", description="Model version; empty = <cscl version>+<hash of the run's weights>."
    )
    min_score: float = Field(
        0.6, description="Quality gate: package only if the evaluation score reaches this."
    )


SECTIONS: dict[str, type[_Section]] = {
    "data": Data,
    "encoder": Encoder,
    "training": Training,
    "evaluation": Evaluation,
    "serving": Serving,
}


class CohortConfig(_Section):
    """A whole cohort config: a few run-wide keys, then one block per section."""

    out: str = Field(
        "runs/cohort",
        description="Folder `cscl run` writes every step's outputs into (features/, "
        "registration/, adapter/, slide/, embeddings.parquet, evaluation/, models/).",
    )
    seed: int = Field(0, description="Seed of every random step.")
    device: str = Field("", description="cpu / cuda; empty = cuda if available.")
    s3_endpoint: str = Field(
        "", description="S3 endpoint URL (MinIO, moto); empty = AWS_ENDPOINT_URL or AWS itself."
    )
    quiet: bool = Field(False, description="No progress bars or per-epoch log lines.")
    data: Data = Field(default_factory=Data, description=Data.__doc__)
    encoder: Encoder = Field(default_factory=Encoder, description=Encoder.__doc__)
    training: Training = Field(default_factory=Training, description=Training.__doc__)
    evaluation: Evaluation = Field(default_factory=Evaluation, description=Evaluation.__doc__)
    serving: Serving = Field(default_factory=Serving, description=Serving.__doc__)

    # Where the values came from (shown in messages and in `--help`).
    _source: str = PrivateAttr("cohort config")

    @property
    def source(self) -> str:
        return self._source

    @field_validator(*SECTIONS, mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `data:` with nothing under it

    def _blocks(self) -> list[BaseModel]:
        return [self, *(getattr(self, s) for s in SECTIONS)]

    def values(self) -> dict[str, Any]:
        """Every key → its value (stated in the file or the default), sections flattened."""
        return {k: getattr(b, k) for b in self._blocks() for k in _own_keys(type(b))}

    def stated(self) -> dict[str, Any]:
        """Only the keys the file states: they fill command options and pipeline parameters
        (a key left out keeps the command's own default, e.g. the `--preset` schedule)."""
        return {
            k: getattr(b, k)
            for b in self._blocks()
            for k in _own_keys(type(b))
            if k in b.model_fields_set
        }


def _own_keys(model: type[BaseModel]) -> list[str]:
    return [k for k in model.model_fields if k not in SECTIONS]


def keys() -> dict[str, tuple[str, Any]]:
    """Every key → (section or "" for run-wide keys, pydantic FieldInfo)."""
    out: dict[str, tuple[str, Any]] = {}
    for section, model in [("", CohortConfig), *SECTIONS.items()]:
        for k in _own_keys(model):
            assert k not in out, f"config key {k!r} is declared twice"
            out[k] = (section, model.model_fields[k])
    return out


def _dotted(key: str) -> str:
    section = keys()[key][0]
    return f"{section}.{key}" if section else key


# ---- loading ------------------------------------------------------------------------------


def load_config(path: str | Path) -> CohortConfig:
    """Read and check a cohort config file; InputError naming the key on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(
            f"cohort config {path} does not exist", hint="write one: cscl config init > FILE"
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(
            f"{path} must hold a mapping of sections and keys, not {type(raw).__name__}"
        )
    return parse_config(raw, source=str(path))


def parse_config(raw: dict, source: str = "cohort config") -> CohortConfig:
    """A config from a mapping (the parsed YAML)."""
    try:
        cfg = CohortConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(
            f"{source}: " + "; ".join(_explain(e) for e in exc.errors()),
            hint="`cscl config init` prints every key with its type and default",
        ) from None
    cfg._source = source
    return cfg


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _explain(error: dict) -> str:
    """One pydantic error in the file's words: the dotted key, what was expected, what was found."""
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc)
    if len(loc) == 1 and loc[0] in SECTIONS:
        return f"{where}: expected a block of {where} keys, got {error.get('input')!r}"
    field = keys().get(loc[-1])
    want = _TYPE_WORDS.get(field[1].annotation, str(field[1].annotation)) if field else "?"
    return f"{where}: expected {want}, got {error.get('input')!r}"


def _unknown_key(loc: list[str]) -> str:
    name = loc[-1]
    section = loc[0] if len(loc) == 2 else ""
    here = list(SECTIONS) + _own_keys(CohortConfig) if not section else _own_keys(SECTIONS[section])
    where = f"{section}.{name}" if section else name
    elsewhere = keys().get(name)
    if elsewhere and elsewhere[0] != section:
        return f"unknown key {where!r}: {name} belongs under {elsewhere[0] or 'the top level'}"
    close = difflib.get_close_matches(name, here, n=1, cutoff=0.5) or difflib.get_close_matches(
        name, list(keys()), n=1, cutoff=0.5
    )
    guess = (
        f"; did you mean {_dotted(close[0]) if close[0] in keys() else close[0]!r}?"
        if close
        else ""
    )
    return f"unknown key {where!r}{guess}"


# ---- the template ---------------------------------------------------------------------------


def template() -> str:
    """The commented template `cscl config init` prints: every key with its help and default.

    A key is commented out (its default applies) unless it has an example value to fill in;
    uncomment a line to change it. Generated from the declarations above, so it cannot drift.
    """
    lines = [
        "# Cohort config: `cscl run --config FILE` runs the whole chain; `cscl --config FILE "
        "<command>`",
        "# fills that command's options from it (an option given on the command line wins).",
        "# `cscl pipeline run-local|submit --config FILE` reads the keys named as pipeline "
        "parameters.",
        "# Every key is listed with its help and default: uncomment a line to change it.",
        "# Relative paths are relative to the directory you run cscl in.",
        "",
    ]
    lines += _block(CohortConfig, indent="")
    for section, model in SECTIONS.items():
        lines += ["", f"# {model.__doc__}", f"{section}:"]
        lines += _block(model, indent="  ")
    return "\n".join(lines) + "\n"


def _block(model: type[BaseModel], indent: str) -> list[str]:
    out = []
    for k in _own_keys(model):
        info = model.model_fields[k]
        example = (info.json_schema_extra or {}).get("example")
        out += [f"{indent}# {line}" for line in textwrap.wrap(info.description, 96 - len(indent))]
        if example is not None:
            out.append(f"{indent}{_yaml_line(k, example)}   # default: {_yaml_value(info.default)}")
        else:
            out.append(f"{indent}# {_yaml_line(k, info.default)}")
    return out


def _yaml_value(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
        .strip()
        .removesuffix("\n...")
        .removesuffix("...")
        .strip()
    )


def _yaml_line(key: str, value: Any) -> str:
    return f"{key}: {_yaml_value(value)}"
