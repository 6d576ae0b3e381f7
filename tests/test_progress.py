"""cscl.progress: a rich bar on a terminal, periodic plain lines in a log, nothing when quiet."""

from __future__ import annotations

import io

import pytest

from cscl.progress import progress, track


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(buf: io.StringIO) -> list[str]:
    return [ln for ln in buf.getvalue().splitlines() if ln.strip()]


def test_plain_lines_every_tenth_with_rate_eta_and_a_done_line(monkeypatch):
    monkeypatch.delenv("CSCL_PROGRESS", raising=False)
    buf = io.StringIO()  # not a terminal: what a log file or a Kubeflow pod sees
    with progress(stream=buf, interval_s=3600) as prog:
        task = prog.add_task("slides", total=50, min_gap_s=0)
        for _ in range(50):
            prog.advance(task)
    lines = _lines(buf)
    assert len(lines) == 10  # 9 tenths + the done line, not 50 lines
    assert lines[0].startswith("slides: 5/50 (10%)") and "/s" in lines[0] and "ETA" in lines[0]
    assert lines[4].startswith("slides: 25/50 (50%)")
    assert lines[-1].startswith("slides: 50 done in")


def test_a_fast_loop_is_one_line(monkeypatch):
    monkeypatch.delenv("CSCL_PROGRESS", raising=False)
    buf = io.StringIO()
    assert sum(track(range(100), "embed", stream=buf)) == 4950
    assert _lines(buf) == [_lines(buf)[0]] and "100 done in" in _lines(buf)[0]


def test_time_only_tasks_log_by_interval_and_restart_per_item(monkeypatch):
    monkeypatch.delenv("CSCL_PROGRESS", raising=False)
    buf = io.StringIO()
    with progress(stream=buf, interval_s=0) as prog:  # every update is due
        task = prog.add_task("patches", total=None, log_every=None)
        prog.update(task, description="patches s1", total=3, completed=0)
        prog.advance(task, 2)
        prog.advance(task, 1)
        prog.update(task, description="patches s2", total=2, completed=0)
        prog.advance(task, 2)
        prog.update(task, info="loss 0.5")
    lines = _lines(buf)
    assert [ln.split(":")[0] for ln in lines] == ["patches s1", "patches s1", "patches s2"]
    assert lines[0].startswith("patches s1: 2/3 (67%)") and "done in" in lines[1]
    assert lines[2].startswith("patches s2: 2 done in")


def test_info_field_is_in_the_line(monkeypatch):
    monkeypatch.delenv("CSCL_PROGRESS", raising=False)
    buf = io.StringIO()
    with progress(stream=buf) as prog:
        task = prog.add_task("train", total=2, log_every=0.5, min_gap_s=0)
        prog.update(task, advance=1, info="epoch 1 loss 0.6931")
        prog.update(task, advance=1, info="epoch 2 loss 0.5000")
    first, done = _lines(buf)
    assert first.endswith("epoch 1 loss 0.6931") and done.endswith("epoch 2 loss 0.5000")


def test_quiet_prints_nothing_and_a_terminal_gets_a_bar(monkeypatch):
    monkeypatch.delenv("CSCL_PROGRESS", raising=False)
    buf = io.StringIO()
    assert list(track(range(5), "x", quiet=True)) == list(range(5))
    with progress(quiet=True, stream=buf) as prog:
        prog.advance(prog.add_task("x", total=3), 3)
    assert buf.getvalue() == ""
    tty = _Tty()
    with progress(stream=tty) as prog:
        assert prog.mode == "bar"
        prog.advance(prog.add_task("rendering", total=3), 3)
    assert "rendering" in tty.getvalue() and "3/3" in tty.getvalue()


@pytest.mark.parametrize("mode", ["plain", "off"])
def test_environment_overrides_the_terminal_test(monkeypatch, mode):
    monkeypatch.setenv("CSCL_PROGRESS", mode)
    tty = _Tty()
    with progress(stream=tty) as prog:
        prog.advance(prog.add_task("x", total=1))
    assert prog.mode == mode
    assert ("x: 1 done in" in tty.getvalue()) == (mode == "plain")
