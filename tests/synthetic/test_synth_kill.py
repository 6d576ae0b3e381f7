"""A killed `cscl synth` (issue 11): its workers die with it, and a rerun removes its debris.

Real processes: `cscl synth` runs as a subprocess, is killed while its workers render, and the
test checks the process tree and the folder. Every wait is bounded (polling, no fixed sleeps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from cscl.cli import main
from cscl.errors import InputError
from cscl.synthetic.workers import exclusive_folder, remove_debris

RUN = "import sys; from cscl.cli import main; sys.exit(main(sys.argv[1:]))"


def _args(out: Path, size: tuple[int, int], workers: int) -> list[str]:
    w, h = size
    return ["synth", "--out", str(out), "--cases", "1", "--stains", "HE,KI67", "--width", str(w),
            "--height", str(h), "--workers", str(workers), "--quiet"]  # fmt: skip


def _start(out: Path, size, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", RUN, *_args(out, size, 2)], env=env, **kw)


def _wait_for(cond, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _rendering(out: Path, n: int):
    return lambda: len(list((out / "slides").glob(".pyr-*"))) >= n


def _kill_all(procs) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def test_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "c"
    proc = _start(out, (8000, 6000))  # big enough that each slide renders for many seconds
    kids: list[psutil.Process] = []
    try:
        _wait_for(_rendering(out, 2), "both workers rendering")
        kids = psutil.Process(proc.pid).children(recursive=True)  # forkserver + 2 workers
        assert len(kids) >= 2
        proc.send_signal(signal.SIGKILL)  # the parent only
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(kids, timeout=5)
        assert not alive, f"workers outlived their parent: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(kids)


def test_rerun_removes_debris_of_a_killed_group(tmp_path):
    out = tmp_path / "c"
    proc = _start(out, (3000, 2000), start_new_session=True)
    try:
        _wait_for(_rendering(out, 1), "a worker rendering")
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: nobody cleans up
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    slides = out / "slides"
    debris = [p.name for p in slides.iterdir() if p.name.startswith(".")]
    assert any(n.startswith(".pyr-") for n in debris), debris
    assert any(n.endswith(".part") for n in debris), debris
    foreign = slides / ".notes.txt.abc.part"  # not ours: a rerun leaves it alone
    foreign.write_text("x")
    assert main(_args(out, (3000, 2000), 1)) == 0
    left = sorted(p.name for p in slides.iterdir() if p.name.startswith("."))
    assert left == [foreign.name]
    assert sorted(p.name for p in slides.glob("*.svs")) == ["case000_HE.svs", "case000_KI67.svs"]
    assert len(pd.read_csv(out / "manifest.csv")) == 2


def test_one_run_per_folder_and_debris_patterns(tmp_path):
    (tmp_path / ".case000_HE.svs.x1.part").write_text("")
    (tmp_path / ".pyr-abc").mkdir()
    (tmp_path / ".pyr-abc" / "level1.raw").write_bytes(b"0")
    (tmp_path / "case000_HE.svs.part").write_text("")  # no leading dot: not our pattern
    gone = remove_debris(tmp_path, ["case000_HE.svs"])
    assert sorted(p.name for p in gone) == [".case000_HE.svs.x1.part", ".pyr-abc"]
    assert (tmp_path / "case000_HE.svs.part").exists()
    with (
        exclusive_folder(tmp_path),
        pytest.raises(InputError, match="another `cscl synth` is writing"),
        exclusive_folder(tmp_path),
    ):
        pass
    with exclusive_folder(tmp_path):  # released after the first run
        pass
