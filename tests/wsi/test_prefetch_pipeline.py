"""Extraction with the next slide prepared in a helper process (cscl.wsi.prefetch) gives the
same features, QC, statuses, messages and summary as one slide after the other."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import warnings
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from slides import render, write_slide

from cscl.cli import build_parser
from cscl.wsi.extract import SUMMARY_NAME, extract_slides, extractor_hash
from cscl.wsi.prefetch import SlideJob, SlidePipeline, SlidePreparer
from cscl.wsi.prepare import PrepareOptions

TIMING = {"seconds", "tile_check_seconds"}  # wall times: the only fields allowed to differ


def _corrupt_tile(src: Path, dst: Path, tile: int = 5) -> Path:
    """`src` with 20 zero bytes inside `tile`'s entropy-coded data (libjpeg warns, decodes)."""
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        off, n = int(tif.pages[0].dataoffsets[tile]), int(tif.pages[0].databytecounts[tile])
    sos = raw.index(b"\xff\xda", off, off + n)
    at = (sos + 4 + int.from_bytes(raw[sos + 2 : sos + 4], "big") + off + n) // 2
    raw[at : at + 20] = bytes(20)
    dst.write_bytes(bytes(raw))
    return dst


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> pd.DataFrame:
    """Good slides among bad ones: blank, not a slide, missing, no mpp, an mpp guessed from the
    objective power (warns), a corrupt tile (flagged), and a slide id given twice."""
    d = tmp_path_factory.mktemp("mixed")
    write_slide(d / "good.svs", render(768, 768, "HE", seed=1))
    write_slide(d / "ki67.svs", render(640, 640, "KI67", seed=2))
    write_slide(d / "blank.svs", render(512, 512, blank=True))
    (d / "junk.svs").write_bytes(np.random.default_rng(1).bytes(40_000))
    write_slide(d / "nompp.tiff", render(512, 512), mpp=None, fmt="generic")
    write_slide(d / "mag.svs", render(512, 512, "HER2", seed=4), mpp=None, mag=20)
    _corrupt_tile(write_slide(d / "src.svs", render(1024, 1024, seed=3)), d / "flagged.svs")
    rows = [
        ("good", "good.svs"),
        ("blank", "blank.svs"),
        ("ki67", "ki67.svs"),
        ("junk", "junk.svs"),
        ("gone", "gone.svs"),
        ("mag", "mag.svs"),
        ("nompp", "nompp.tiff"),
        ("flagged", "flagged.svs"),
        ("good", "good.svs"),  # the same id again: reused from the first row's file
    ]
    return pd.DataFrame(
        [{"slide_id": s, "slide_uri": str(d / f), "stain": "HE", "mpp": None} for s, f in rows]
    )


def _summary(out: Path) -> list[str]:
    """The summary file's lines, wall times dropped and the output folder named OUT: the bytes
    themselves (key order, formatting), not only the parsed content."""
    text = (out / SUMMARY_NAME).read_text().replace(str(out), "OUT")
    return [line for line in text.splitlines() if '"seconds":' not in line]


def _h5(path: Path) -> dict:
    """Every dataset and attribute of a feature file; QC parsed, its timings dropped."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v

        visit("/", f)
        f.visititems(visit)
    qc = json.loads(out.pop("/@qc"))
    out["qc"] = {k: v for k, v in qc.items() if k not in TIMING}
    return out


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.h5"))
    assert names == sorted(p.name for p in b.glob("*.h5")) and names
    for n in names:
        fa, fb = _h5(a / n), _h5(b / n)
        assert fa.keys() == fb.keys(), n
        for k in fa:
            np.testing.assert_equal(fa[k], fb[k], err_msg=f"{n}:{k}")  # NaN == NaN here


def test_prefetch_equals_sequential_then_resumes_the_same(mixed, cfg, encoder, tmp_path):
    cfg = replace(cfg, num_workers=1)  # the DataLoader forks a worker while the helper runs
    seq, pf = tmp_path / "seq", tmp_path / "pf"
    guessed = "mag.svs: no usable mpp.*objective power 20x"  # warned in the parent both ways
    with pytest.warns(UserWarning, match=guessed):
        extract_slides(
            mixed, seq, replace(cfg, prefetch=False), encoder=encoder, show_progress=False
        )
    stats: dict = {}
    with pytest.warns(UserWarning, match=guessed):
        summary = extract_slides(
            mixed,
            pf,
            replace(cfg, prefetch=True),
            encoder=encoder,
            show_progress=False,
            stats=stats,
            helper="wait",
        )
    # the helper prepared every slide that needed work after the first, in one process
    assert stats["prefetch_processes"] == 1 and stats["prefetch_slides"] == 7
    assert _summary(pf) == _summary(seq)
    _same_files(seq, pf)
    # the default starts a helper only when the preparation ahead is worth its start-up
    quick, stats = tmp_path / "quick", {}
    with pytest.warns(UserWarning, match=guessed):
        extract_slides(mixed, quick, cfg, encoder=encoder, show_progress=False, stats=stats)
    assert _summary(quick) == _summary(seq)
    _same_files(seq, quick)
    assert stats["prefetch_processes"] == 0  # "auto": these slides are not worth a helper

    by = {(r.slide_id, r.status): r for r in summary.results}
    assert [r.status for r in summary.results] == [
        "done", "failed", "done", "failed", "failed", "done", "failed", "done", "skipped"
    ]  # fmt: skip
    assert "no tissue found in" in by["blank", "failed"].error
    assert "junk.svs is not a slide" in by["junk", "failed"].error
    assert "not found" in by["gone", "failed"].error
    assert "--mpp" in by["nompp", "failed"].error
    assert by["flagged", "done"].corrupt_tiles == 1 and "(256,256)" in by["flagged", "done"].warning
    assert _h5(pf / "mag.h5")["qc"]["mpp_source"] == "objective-power"

    # a rerun: every good slide reused, one deleted file extracted again, failures as before
    for out in (seq, pf):
        (out / "ki67.h5").unlink()
    extract_slides(mixed, seq, replace(cfg, prefetch=False), encoder=encoder, show_progress=False)
    stats = {}
    rerun = extract_slides(
        mixed,
        pf,
        replace(cfg, prefetch=True),
        encoder=encoder,
        show_progress=False,
        stats=stats,
        helper="wait",
    )
    assert _summary(pf) == _summary(seq)
    _same_files(seq, pf)
    assert [r.slide_id for r in rerun.done] == ["ki67"]
    assert len(rerun.skipped) == 4 and len(rerun.failed) == 4  # good, mag, flagged, good again
    assert stats["prefetch_slides"] == 4  # ki67 (after the first failure) and three failures


def test_no_helper_for_one_slide_or_when_switched_off(mixed, cfg, encoder, tmp_path):
    one = mixed.iloc[:1]
    for prefetch, rows in ((True, one), (False, mixed.iloc[:3])):
        stats: dict = {}
        s = extract_slides(
            rows,
            tmp_path / str(prefetch),
            replace(cfg, prefetch=prefetch),
            encoder=encoder,
            show_progress=False,
            stats=stats,
        )
        assert stats["prefetch_processes"] == 0 and len(s.done) >= 1


def test_prefetch_is_not_part_of_the_extractor_hash(cfg):
    assert extractor_hash(replace(cfg, prefetch=False), "w") == extractor_hash(cfg, "w")


def test_cli_switch():
    p = build_parser()
    base = ["extract", "--slide", "x.svs", "--out", "o"]
    assert p.parse_args(base).prefetch is True
    assert p.parse_args([*base, "--no-prefetch"]).prefetch is False


def test_a_helper_that_dies_fails_its_slide_only(mixed, tmp_path):
    uri = mixed.iloc[0].slide_uri
    job = SlideJob(uri, "good", "HE", None, tmp_path / "good.h5")
    with SlidePreparer(PrepareOptions(patch_size=64)) as helper:
        helper.start(wait=True)
        helper.submit(job)
        os.kill(helper._proc.pid, signal.SIGKILL)
        prepared, error, _ = helper.take()
        assert prepared is None and "slide-preparation process died" in error and uri in error
        helper.start(wait=True)  # a fresh helper takes the next slide
        helper.submit(job)
        prepared, error, _ = helper.take()
        assert error is None and len(prepared.grid) > 0 and helper.started == 2
        with prepared.wsi as wsi:  # reopened here, in the parent, on first read
            assert wsi.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)


def _steps_in_daemon(conn, jobs) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = list(SlidePipeline(jobs, PrepareOptions(patch_size=64), "h", helper="eager"))
    conn.send(
        (
            [(s.result.status if s.result else "ready", s.prefetched) for s in steps],
            [str(w.message) for w in caught],
        )
    )


def test_inside_a_daemonic_process_slides_are_prepared_in_turn(mixed, tmp_path):
    """A daemonic process may not start children (a pool worker calling extract_slides): the
    run goes on without the helper, and says so."""
    jobs = [
        SlideJob(r.slide_uri, f"s{i}", "HE", None, tmp_path / f"s{i}.h5")
        for i, r in enumerate(mixed.iloc[:3].itertuples())
    ]
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_steps_in_daemon, args=(child, jobs), daemon=True)
    proc.start()
    steps, said = parent.recv()
    proc.join(timeout=60)
    assert steps == [("ready", False), ("failed", False), ("ready", False)]
    assert any("slide prefetch is off for this run" in m for m in said)


def test_auto_starts_a_helper_only_when_the_preparation_ahead_pays_for_it(tmp_path):
    def pipeline(rows: int, mode: str = "auto") -> SlidePipeline:
        jobs = [
            SlideJob(f"s{i}.svs", f"s{i}", "HE", None, tmp_path / f"s{i}.h5") for i in range(rows)
        ]
        p = SlidePipeline(jobs, PrepareOptions(), "h", helper=mode)
        p._pos = 0
        return p

    p = pipeline(10)
    assert not p._worth_starting()  # nothing measured yet: asked again during the forward pass
    p.here_seconds, p.here_slides = 1.0, 1  # 1 s per slide × 9 slides left ≥ 2 × start-up
    assert p._worth_starting()
    p = pipeline(3)
    p.here_seconds, p.here_slides = 1.0, 1  # 2 s ahead: the helper's imports cost more
    assert not p._worth_starting() and pipeline(3, "eager")._worth_starting()


UNGUARDED = """
import sys
from dataclasses import replace
import pandas as pd
from cscl.wsi.extract import ExtractConfig, extract_slides

print("SCRIPT-BODY-RAN", flush=True)  # no `if __name__ == "__main__"` guard, on purpose
slides = pd.DataFrame({"slide_uri": sys.argv[1:3], "slide_id": ["a", "b"], "stain": "HE"})
cfg = ExtractConfig(backbone="test_resnet", allow_random=True, patch_size=64, num_workers=0,
                    torch_threads=1)
stats = {}
s = extract_slides(slides, sys.argv[3], cfg, show_progress=False, stats=stats, helper="wait")
print("STATUSES", [r.status for r in s.results], "HELPER", stats["prefetch_slides"], flush=True)
"""


def test_helper_does_not_rerun_an_unguarded_script(tmp_path):
    """spawn re-imports the parent's main script; the helper must not run a user's script again."""
    import subprocess
    import sys

    a = write_slide(tmp_path / "a.svs", render(640, 640, "HE", seed=5))
    b = write_slide(tmp_path / "b.svs", render(640, 640, "HE", seed=6))
    script = tmp_path / "user_script.py"
    script.write_text(UNGUARDED)
    out = subprocess.run(
        [sys.executable, str(script), str(a), str(b), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("SCRIPT-BODY-RAN") == 1, out.stdout
    assert "STATUSES ['done', 'done'] HELPER 1" in out.stdout, out.stdout
