"""validate: the Great Expectations data gate → `HTML` report + `Metrics` + pass/fail."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def validate(
    slide_index: Input[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    qc_table: Output[Dataset],
    labels_uri: str = "",
    s3_endpoint: str = "",
    min_pass_rate: float = 1.0,
    mpp_min: float = 0.1,
    mpp_max: float = 2.0,
    min_tissue_fraction: float = 0.02,
) -> bool:
    """Validate manifest + labels + slide QC. Returns whether the gate passed.

    The task itself succeeds either way so the report reaches the UI; the pipeline stops the run
    on `False` (pipelines/training.py, `stop_run`).
    """
    import shutil
    import tempfile
    from pathlib import Path

    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl_platform.validation import QCThresholds, validate_cohort

    storage.configure_store(s3_endpoint or None)
    out = Path(tempfile.mkdtemp(prefix="cscl-validate-"))
    res = validate_cohort(
        read_index(slide_index.path),
        labels_uri or None,
        out,
        thresholds=QCThresholds(
            mpp_min=mpp_min, mpp_max=mpp_max, min_tissue_fraction=min_tissue_fraction
        ),
        min_pass_rate=min_pass_rate,
    )
    shutil.copyfile(out / "report.html", report.path)
    shutil.copyfile(out / "slide_qc.csv", qc_table.path)
    for k, v in res.metrics.items():
        metrics.log_metric(k, v)
    metrics.log_metric("passed", float(res.success))
    print(res.summary())
    return bool(res.success)


@cscl_component
def stop_run(message: str) -> None:
    """Fail the run on purpose with a message in the task log (a gate said no)."""
    raise RuntimeError(message)
