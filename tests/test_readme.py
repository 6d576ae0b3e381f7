"""The README's command walk-through runs as written, in order, in an empty folder.

Only the placeholder the README documents is filled in: PORT, from the banner `cscl serve` prints.
A line ending in `&` (the server) runs in the background until the test ends, as in a shell; the
README's non-`cscl` lines (`kill %1`) are this test's cleanup.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTION = "## The library, step by step"
READY = "Ctrl-C stops the server"


def readme_commands(text: str) -> list[list[str]]:
    """The `cscl …` commands of the walk-through block, continuation lines joined, comments cut."""
    section = text[text.index(SECTION) :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"no ```sh block under {SECTION!r} in README.md"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    commands = [shlex.split(line, comments=True) for line in joined.splitlines()]
    return [c for c in commands if c and c[0] == "cscl"]


def test_readme_block_is_found_and_complete():
    cmds = readme_commands((REPO / "README.md").read_text())
    names = [c[1] for c in cmds]
    assert names[:3] == ["synth", "extract", "register"] and names[-3:] == [
        "serve",
        "predict",
        "monitor",
    ]
    assert all("--preset" in c for c in cmds if c[1] == "pretrain")
    assert cmds[names.index("serve")][-1] == "&"


def _cscl() -> str:
    exe = Path(sys.executable).with_name("cscl")
    return str(exe) if exe.exists() else shutil.which("cscl") or "cscl"


@pytest.mark.slow
@pytest.mark.torchserve
@pytest.mark.skipif(not shutil.which("java"), reason="TorchServe needs Java")
def test_readme_walkthrough_runs_verbatim(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("AWS_ENDPOINT_URL", None)
    exe = _cscl()
    background: subprocess.Popen | None = None
    port = None
    timings: list[tuple[str, float]] = []
    try:
        for argv in readme_commands((REPO / "README.md").read_text()):
            if port is not None:
                argv = [a.replace("PORT", port) for a in argv]
            assert "PORT" not in " ".join(argv), "PORT used before `cscl serve` printed it"
            t0 = time.perf_counter()
            if argv[-1] == "&":
                background, port = _start_in_background([exe, *argv[1:-1]], tmp_path, env)
            else:
                done = subprocess.run(
                    [exe, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                    timeout=900,
                )  # fmt: skip
                assert done.returncode == 0, (
                    f"{shlex.join(argv)} exited {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
            timings.append((argv[1], time.perf_counter() - t0))
    finally:
        if background is not None:  # the README's `kill %1`
            background.send_signal(signal.SIGTERM)
            try:
                background.wait(timeout=60)
            except subprocess.TimeoutExpired:
                background.kill()
    print("README walk-through:", ", ".join(f"{n} {s:.0f}s" for n, s in timings))
    assert (tmp_path / "runs/s/loss.png").exists() and (tmp_path / "runs/s/history.csv").exists()
    assert (tmp_path / "reports/eval/report.html").exists()
    assert list((tmp_path / "logs/inference-logs").rglob("*.json")), "no inference record"
    assert (tmp_path / "reports/drift/drift.json").exists()


def _start_in_background(cmd: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """Start the server as `cmd &` would, wait for its ready line, return (process, PORT)."""
    log = open(cwd / "serve.out", "w")  # noqa: SIM115  (kept open for the process's lifetime)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    text = ""
    while time.monotonic() < deadline:
        text = (cwd / "serve.out").read_text()
        if READY in text:
            break
        if proc.poll() is not None:
            pytest.fail(f"`cscl serve` exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"`cscl serve` not ready in 600 s:\n{text[-3000:]}")
    found = re.search(r"inference\s+http://127\.0\.0\.1:(\d+)/", text)
    assert found, f"`cscl serve` did not print its inference port:\n{text}"
    return proc, found.group(1)
