"""Hostile slide files (issue 11): uncalibrated resolutions, truncated/empty copies, folders named
like slides, slides too large to extract. Each class gets one clear message that names the file
and says what to do, from every backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from slides import render, write_slide

from cscl.cli import main
from cscl.errors import ErrorKind, SlideError
from cscl.wsi.extract import extract_slide
from cscl.wsi.readers import implausible_mpp, open_slide

BACKENDS = ["auto", "openslide", "tifffile"]
CLI = ["--backbone", "test_resnet", "--random-init", "--patch-size", "64", "--threads", "1"]


def _tiff(path, img, **res):
    """A generic tiled JPEG pyramid with the given resolution tags."""
    with tifffile.TiffWriter(path) as tif:
        for k, ds in enumerate((1, 4)):
            tif.write(
                np.ascontiguousarray(img[::ds, ::ds]),
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                metadata=None,
                subfiletype=1 if k else 0,
                **(res if k == 0 else {}),
            )
    return path


UNCALIBRATED = {
    "72dpi": dict(resolution=(72, 72), resolutionunit="INCH"),  # the TIFF default: 352.8 µm/px
    "96dpi": dict(resolution=(96, 96), resolutionunit="INCH"),
    "300dpi": dict(resolution=(300, 300), resolutionunit="INCH"),
    "1px_per_cm": dict(resolution=(1, 1), resolutionunit="CENTIMETER"),  # 10,000 µm/px
    "too_fine": dict(resolution=(1e6, 1e6), resolutionunit="CENTIMETER"),  # 0.01 µm/px
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(UNCALIBRATED))
def test_uncalibrated_resolution_is_no_resolution(tmp_path, case, backend):
    p = _tiff(tmp_path / f"{case}.tif", render(512, 512, "HE", seed=1), **UNCALIBRATED[case])
    with pytest.raises(SlideError, match=f"{case}.tif states no resolution.*--mpp") as err:
        open_slide(p, backend)
    assert "ignored" in str(err.value)  # says why the file's value was not used
    with open_slide(p, backend, mpp=0.5) as wsi:  # the advice works
        assert wsi.mpp == 0.5 and wsi.mpp_source == "override"


@pytest.mark.parametrize("backend", BACKENDS)
def test_implausible_aperio_mpp_and_override_refused(tmp_path, backend):
    p = write_slide(tmp_path / "ap.svs", render(512, 512, "HE"), mpp=352.8, fmt="aperio")
    with pytest.raises(SlideError, match="no resolution.*72 dpi.*--mpp"):
        open_slide(p, backend)
    with pytest.raises(SlideError, match="mpp override .* outside the range.*--mpp"):
        open_slide(p, backend, mpp=100.0)
    assert implausible_mpp(0.25) is None and implausible_mpp(16.0) is None


def _good_bytes(slide_factory) -> bytes:
    return slide_factory("good.svs", size=768).read_bytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("keep", [0.0, 0.001, 0.3, 0.6, 0.95, 0.999])
def test_truncated_or_empty_copy_says_copy_again(tmp_path, slide_factory, backend, keep):
    data = _good_bytes(slide_factory)
    p = tmp_path / "cut.svs"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SlideError, match=r"cut.svs is (truncated|empty)") as err:
        open_slide(p, backend)
    msg = str(err.value)
    assert "copy/download it again" in msg and "supported:" not in msg


def test_not_a_tiff_under_a_slide_name(tmp_path):
    p = tmp_path / "page.svs"
    p.write_bytes(b"<html><body>403 Forbidden</body></html>" * 20)
    with pytest.raises(SlideError, match="page.svs is not a slide.*does not start with a TIFF"):
        open_slide(p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_directory_named_like_a_slide(tmp_path, backend):
    (tmp_path / "x.svs").mkdir()
    with pytest.raises(SlideError, match="x.svs is a directory, not a slide file.*point to"):
        open_slide(tmp_path / "x.svs", backend)


def test_batch_reports_truncated_and_folder_and_goes_on(tmp_path, slide_factory, capsys):
    data = _good_bytes(slide_factory)
    (tmp_path / "cut.svs").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.svs").write_bytes(b"")
    (tmp_path / "dir.svs").mkdir()
    rows = ["case_id,stain,slide_uri", "c0,HE,good.svs", "c1,HE,cut.svs", "c2,HE,empty.svs"]
    rows.append("c3,HE,dir.svs")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "f"
    rc = main(
        ["extract", "--manifest", str(tmp_path / "m.csv"), "--out", str(out), "--quiet", *CLI]
    )
    cap = capsys.readouterr()
    assert rc == 1 and "1 done, 0 skipped (reused), 3 failed" in cap.out
    assert "cut.svs is truncated" in cap.err and "empty.svs is empty" in cap.err
    assert "dir.svs is a directory" in cap.err
    assert [p.name for p in out.glob("*.h5")] == ["good.h5"]


def test_patch_count_is_bounded(he_slide, tmp_path, cfg, encoder, capsys):
    cfg.max_patches = 10
    res = extract_slide(str(he_slide), tmp_path / "f", cfg, encoder)
    assert res.status == "failed"
    assert "patches of 64 px" in res.error and "above the bound of 10" in res.error
    assert "level-0 mpp 0.5" in res.error and "--max-patches" in res.error
    assert not list((tmp_path / "f").glob("*.h5"))
    with pytest.raises(SlideError) as err:  # serving maps the kind to 413
        from cscl.wsi.extract import check_patch_count
        from cscl.wsi.patching import patch_grid
        from cscl.wsi.tissue import segment_tissue

        with open_slide(he_slide) as wsi:
            mask = segment_tissue(wsi, cfg.tissue)
            check_patch_count(wsi, patch_grid(wsi, mask, 1.0, 64, 0.25), cfg, mask)
    assert err.value.kind == ErrorKind.TOO_LARGE
    base = ["extract", "--slide", str(he_slide), "--out", str(tmp_path / "g"), "--quiet", *CLI]
    assert main([*base, "--max-patches", "5"]) == 1
    assert "above the bound of 5 per slide" in capsys.readouterr().err
    assert main([*base, "--max-patches", "0"]) == 0  # 0 = no bound
    summary = json.loads((tmp_path / "g" / "extract_summary.json").read_text())
    assert summary["n_done"] == 1
