"""The local cohort chain behind `cscl run --config cohort.yaml`.

extract → register (when the cohort has IHC) → pretrain adapter (objective cscl) → pretrain slide
→ embed → evaluate (when there are labels) → quality gate → package.

Why each step runs the command itself (parsed from a short argv with the config bound, then its
`run(args)`) and not the library functions directly: a step then behaves exactly as the single
command a user would type with `--config` — same option mapping, same presets, same messages —
and there is one place that maps options onto the library (`cscl/commands/<name>.py`). No
subprocess: everything runs in this process.

Reruns resume: after a step succeeds, `<out>/.cscl-run/<step>.json` records its options; a later
run skips the step when that record matches and its outputs are there, and runs it (and every
step after it) again when an option changed or an output is missing. The commands resume inside
a step too (extract reuses finished feature files, register finished pairs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cscl.config import CohortConfig
from cscl.errors import CsclError, InputError
from cscl.runtime import jsonable

STAMPS = ".cscl-run"
# Options that change how a step runs, not what it writes: changing them does not redo a step.
_NOT_OUTPUT = {"quiet", "device", "workers", "threads", "store_endpoint", "config"}


@dataclass(frozen=True)
class Step:
    """One command of the chain: its argv (paths between steps) and the outputs it leaves."""

    name: str
    command: str
    argv: tuple[str, ...]
    outputs: tuple[Path, ...]


def plan(cfg: CohortConfig, has_ihc: bool) -> list[Step]:
    """The steps for `cfg`, in order; the rest of each command's options come from `cfg`."""
    out = Path(cfg.out)
    feats, reg, adapter, slide = (
        out / "features",
        out / "registration",
        out / "adapter",
        out / "slide",
    )
    emb, ev, models = out / "embeddings.parquet", out / "evaluation", out / "models"
    steps = [Step("extract", "extract", ("--out", str(feats)), (feats,))]
    inputs: tuple[str, ...] = ("--features", str(feats))
    if has_ihc:
        steps.append(Step("register", "register", ("--out", str(reg)), (reg / "registration.csv",)))
        inputs += ("--registration", str(reg / "registration.csv"))
    stage2 = inputs
    if cfg.training.objective == "cscl":
        steps.append(
            Step(
                "adapter",
                "pretrain",
                ("--stage", "adapter", *inputs, "--out", str(adapter)),
                (adapter / "config.json",),
            )  # fmt: skip
        )
        stage2 += ("--adapter", str(adapter))
    steps += [
        Step("slide", "pretrain", ("--stage", "slide", *stage2, "--out", str(slide)),
             (slide / "config.json",)),
        Step("embed", "embed", ("--model", str(slide), "--features", str(feats), "--out", str(emb)),
             (emb,)),
    ]  # fmt: skip
    package = ("--model", str(slide), "--out", str(models), "--embeddings", str(emb))
    if cfg.data.labels_uri:
        steps.append(
            Step(
                "evaluate",
                "evaluate",
                ("--embeddings", str(emb), "--out", str(ev)),
                (ev / "metrics.json",),
            )  # fmt: skip
        )
        # heads for the evaluated tasks, as the training pipeline does
        package += ("--tasks", cfg.evaluation.tasks, "--metrics", str(ev / "metrics.json"))
    name = cfg.serving.model_name
    steps.append(Step("package", "package", package, (models / name / "bundle.json",)))
    return steps


def cohort_has_ihc(cfg: CohortConfig) -> bool:
    """Whether the manifest has any slide besides H&E (then registration runs)."""
    from cscl.io.manifest import HE, load_manifest

    if not cfg.data.manifest_uri:
        raise InputError(
            f"{cfg.source}: data.manifest_uri is empty; `cscl run` needs the cohort manifest",
            hint="set data.manifest_uri (cscl config init shows every key)",
        )
    return bool((load_manifest(cfg.data.manifest_uri)["stain"] != HE).any())


def run_chain(
    cfg: CohortConfig,
    parse: Callable[[list[str]], object],
    *,
    force: bool = False,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """Run (or resume) the chain; the exit status of the first step that fails, else 0.

    `parse(argv)` turns `[command, *options]` into the command's parsed args with `cfg` bound
    (`cscl.cli.parse_args`); each step calls that command's `run`.
    """
    steps = plan(cfg, cohort_has_ihc(cfg))
    stamps = Path(cfg.out) / STAMPS
    cohort = _cohort_fingerprint(cfg)
    redo = force
    for step in steps:
        args = parse([step.command, *step.argv])
        options = {**_options(args), "cohort_sha256": cohort}
        say(f"── {step.name}: cscl {step.command} {' '.join(step.argv)}  (+ {cfg.source})")
        if dry_run:
            continue
        if step.name == "package" and not _gate_open(cfg, say):  # checked on every run
            return 1
        stamp = stamps / f"{step.name}.json"
        if not redo and _finished(stamp, options, step.outputs):
            say(f"   skipped: done by an earlier run ({', '.join(map(str, step.outputs))})")
            continue
        redo = True  # what follows depends on this step's outputs
        try:
            rc = int(args._run(args) or 0)
        except CsclError as err:
            raise type(err)(f"step {step.name}: {err.message}", hint=err.hint) from err
        if rc and not (step.name == "extract" and cfg.data.skip_failed_slides):
            say(f"   step {step.name} failed (exit {rc}); fix it and run again: finished steps "
                "are kept")  # fmt: skip
            return rc
        stamps.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"command": step.command, "options": options}, indent=1))
    if not dry_run:
        say(f"done: outputs under {cfg.out}/")
    return 0


def _options(args) -> dict:
    return jsonable({
        k: v for k, v in sorted(vars(args).items())
        if not k.startswith("_") and k not in _NOT_OUTPUT and k != "cohort_config"
    })  # fmt: skip


def _cohort_fingerprint(cfg: CohortConfig) -> dict[str, str]:
    """sha256 of the manifest and labels: a cohort edited in place redoes the steps."""
    import hashlib

    from cscl.io import storage

    uris = {"manifest": cfg.data.manifest_uri, "labels": cfg.data.labels_uri}
    return {k: hashlib.sha256(storage.read_bytes(u)).hexdigest() for k, u in uris.items() if u}


def _finished(stamp: Path, options: dict, outputs: tuple[Path, ...]) -> bool:
    if not stamp.is_file() or not all(p.exists() for p in outputs):
        return False
    try:
        return json.loads(stamp.read_text()).get("options") == options
    except (OSError, ValueError):
        return False


def _gate_open(cfg: CohortConfig, say: Callable[[str], None]) -> bool:
    """The training pipeline's quality gate: package only if the score reaches min_score."""
    from cscl.eval.quality import score_summary

    metrics_file = Path(cfg.out) / "evaluation" / "metrics.json"
    if not metrics_file.is_file():  # no labels: nothing to gate on
        return True
    score = score_summary(json.loads(metrics_file.read_text()), "cscl", cfg.evaluation.score_metric)
    ok = score.gate_value() >= cfg.serving.min_score
    verdict = "open" if ok else "closed: not packaged (lower serving.min_score to package anyway)"
    say(f"   quality gate {verdict} — {score.describe()}; min_score {cfg.serving.min_score}")
    return ok
