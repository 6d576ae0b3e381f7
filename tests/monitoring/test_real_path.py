"""The real path once: tiny synthetic slides rendered with and without a ShiftSpec → tissue, QC
and patch features (cscl.wsi) → inference-log records → monitoring verdict.

Another lab's scanner and stain protocol (stain 0.8 + scanner 0.5). With 8 slides per side a
stain shift alone moves one OD column below p = 0.01 (od_mean_1, p ~ 2e-4) and the policy wants
two; the scanner's pixel size (a critical column) makes the verdict unambiguous.
"""

from __future__ import annotations

import pytest

from cscl.monitoring.reference import write_reference
from cscl.monitoring.simulate import slide_records, write_records
from cscl.synthetic import ShiftSpec
from cscl.synthetic.testing import tiny_cohort
from cscl_platform.monitoring.run import run_monitoring

N = 8
SIZE = dict(stains=("HE",), width=1200, height=900)
POLICY = {"min_samples": 8, "min_reference": 8, "signals": {"embedding": {"pca_components": 4}}}


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    ref = slide_records(str(tiny_cohort(root / "ref", N, seed=0, **SIZE)), "v1", day="2026-11-01")
    bundle = root / "bundle"
    write_reference(
        bundle,
        [r["embedding"] for r in ref],
        [r["predictions"] for r in ref],
        [r["qc"] for r in ref],
        "v1",
    )
    same = tiny_cohort(root / "same", N, seed=1, **SIZE)
    shifted = tiny_cohort(
        root / "shifted", N, seed=1, shift=ShiftSpec(stain=0.8, scanner=0.5), **SIZE
    )
    write_records(str(root / "logs-same"), slide_records(str(same), "v1", day="2026-11-02"))
    write_records(str(root / "logs-shift"), slide_records(str(shifted), "v1", day="2026-11-02"))
    return root, bundle


@pytest.mark.slow
@pytest.mark.parametrize("logs, verdict", [("logs-same", "no drift"), ("logs-shift", "drift")])
def test_slides_to_verdict(slides, logs, verdict):
    root, bundle = slides
    res = run_monitoring(
        model_version="v1",
        logs=str(root / logs),
        reference=str(bundle),
        since="2026-11-02",
        until="2026-11-02",
        policy=POLICY,
        progress=False,
    )
    assert res.verdict == verdict, res.drift["signals"]
    assert res.drift["sample_sizes"] == {"reference": N, "current": N, "labelled": 0}
    if verdict == "drift":  # a stain protocol change shows in the tissue's optical density
        qc = res.drift["signals"]["qc"]
        assert qc["status"] == "drift"
        assert "qc_mpp" in qc["drifted_columns"]
        assert qc["columns"]["qc_od_mean_1"]["value"] < 0.05  # the stain shift, seen in OD
