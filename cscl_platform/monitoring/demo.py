"""The monitoring step of `make demo` (called by cscl_platform.demo as `demo_step(ctx)`).

Another lab sends slides: a synthetic H&E cohort rendered with a stain-protocol and scanner shift
(`ShiftSpec(stain=0.8, scanner=0.6)`). Each slide goes through the released model exactly as a
served request would (`cscl.inference.Predictor.predict_slide` → `cscl.inference_log.make_record`)
and its record is written to `<prefix>/inference-logs/date=<today>/`; then one monitoring run
compares today's logs with the model's reference set and prints the verdict. The demo's S3
endpoint is the process store's (`run_demo` sets it), so nothing here takes an endpoint.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cscl.inference import Predictor
from cscl.inference_log import make_record
from cscl.io.manifest import load_manifest
from cscl.monitoring import state as st
from cscl.monitoring.logs import parse_date
from cscl.monitoring.policy import load_policy
from cscl.monitoring.reference import load_reference
from cscl.monitoring.simulate import write_records
from cscl.synthetic import ShiftSpec, generate_cohort
from cscl_platform.monitoring.run import MonitoringResult, run_monitoring


def shifted_requests(
    bundle_dir: str | Path,
    out_dir: str | Path,
    logs_prefix: str,
    *,
    n_cases: int = 10,
    seed: int = 101,
    shift: str = "stain:0.8,scanner:0.6",
    size: tuple[int, int] = (1600, 1200),
) -> int:
    """Render a shifted cohort, predict every H&E slide with the bundle, log the records."""
    manifest = generate_cohort(
        Path(out_dir),
        n_cases=n_cases,
        seed=seed,
        stains=("HE",),
        width=size[0],
        height=size[1],
        shift=ShiftSpec.parse(shift),
        progress=False,
    )
    slides = load_manifest(str(manifest))
    predictor = Predictor(bundle_dir)
    records: list[dict[str, Any]] = []
    for uri in slides["slide_uri"]:
        records.append(make_record(predictor.predict_slide(uri), uri=uri, source="demo-shifted"))
    return write_records(logs_prefix, records)


def demo_monitoring(
    logs: str,
    reference: str,
    model_version: str,
    *,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    out: str | None = None,
    min_samples: int = 10,
) -> MonitoringResult:
    """One monitoring run (report only) with its verdict printed.

    Uses the default policy with `min_samples` lowered to the demo's cohort size. `since`
    defaults to 7 days before `until` (default: today UTC).
    """
    today = st.utcnow().date()
    until_d = parse_date(until or today, "--until")
    since_d = parse_date(since or (until_d - dt.timedelta(days=7)), "--since")
    policy = load_policy({"min_samples": int(min_samples), "min_reference": int(min_samples)})
    res = run_monitoring(
        model_version=model_version,
        logs=logs,
        reference=reference,
        since=since_d,
        until=until_d,
        policy=policy,
        out=out,
        progress=False,
    )
    print(res.summary())
    return res


def demo_step(ctx: Any) -> MonitoringResult | None:
    """`make demo`'s last step: log a shifted cohort's predictions, then one monitoring run."""
    bundles = [
        p for k, p in (ctx.run.artifacts if ctx.run else {}).items() if k.endswith("/bundle")
    ]
    if not bundles or not (Path(bundles[0]) / "reference.parquet").exists():
        print("   monitoring: no released bundle with a reference set; skipped")
        return None
    bundle = Path(bundles[0])
    version = load_reference(str(bundle)).model_version
    n = shifted_requests(bundle, Path(ctx.out_dir) / "shifted-cohort", ctx.project_prefix)
    print(f"   logged {n} predictions for a cohort from another lab (stain + scanner shift)")
    today = dt.datetime.now(dt.UTC).date()
    return demo_monitoring(
        ctx.project_prefix, str(bundle), version, since=today, until=today, min_samples=5
    )
