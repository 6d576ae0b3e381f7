"""Progress of long loops, for a person at a terminal AND for a log file or a Kubeflow pod.

Why one helper: rich bars print nothing when stderr is not a terminal, so `cscl extract` piped to a
file, or a pretrain component in a pod, ran silent for hours. Every long loop (extraction,
synthesis, registration, training epochs, embedding, evaluation) uses `progress()` here:

- on a terminal: a rich bar (description, bar, done/total, info such as the loss, elapsed, ETA);
- otherwise: plain flushed lines `description: done/total (pct) rate ETA info` every
  `interval_s` seconds or each time another `log_every` fraction of the total is done, and one
  `… done in …` line per finished task;
- `quiet=True`: nothing.

The interface is rich's (`add_task`, `update`, `advance`), so a loop written for a rich bar works
unchanged. `CSCL_PROGRESS=plain|bar|off` overrides the terminal test (e.g. plain lines in a tmux
pane that is logged).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

T = TypeVar("T")

INTERVAL_S = 30.0  # plain mode: at least one line this often while a task advances
LOG_EVERY = 0.1  # plain mode: and one line per tenth of the total…
MIN_GAP_S = 2.0  # …but not closer than this (a loop done in a second is one line, not eleven)


def progress(
    quiet: bool = False,
    *,
    stream: IO[str] | None = None,
    interval_s: float = INTERVAL_S,
) -> ProgressLog:
    """A context manager with rich's task interface; see the module docstring for the modes."""
    mode = "off" if quiet else os.environ.get("CSCL_PROGRESS", "").strip().lower()
    out = stream if stream is not None else sys.stderr
    if mode not in ("plain", "bar", "off"):
        mode = "bar" if _isatty(out) else "plain"
    return ProgressLog(mode, out, interval_s)


def track(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    quiet: bool = False,
    stream: IO[str] | None = None,
    **fields: Any,
) -> Iterator[T]:
    """Iterate `items` with progress (rich's `track`, with the plain-log fallback)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(quiet, stream=stream) as prog:
        task = prog.add_task(description, total=total, **fields)
        for item in items:
            yield item
            prog.advance(task)


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


@dataclass
class _Task:
    description: str
    total: float | None
    log_every: float | None
    min_gap_s: float
    fields: dict[str, Any] = field(default_factory=dict)
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    last_step: int = 0  # the last `log_every` step a line was printed for
    finished: bool = False
    bar_id: Any = None  # the rich task, in bar mode


class ProgressLog:
    """rich's `Progress` task interface over a bar, plain log lines, or nothing."""

    def __init__(self, mode: str, stream: IO[str], interval_s: float = INTERVAL_S):
        self.mode = mode
        self.stream = stream
        self.interval_s = interval_s
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.Lock()
        self._bar = None
        if mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=False,
            )

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> ProgressLog:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    start = __enter__

    def stop(self) -> None:
        self.__exit__(None, None, None)

    # -- rich's task interface ----------------------------------------------------------------
    def add_task(
        self,
        description: str,
        total: float | None = None,
        *,
        log_every: float | None = LOG_EVERY,
        min_gap_s: float = MIN_GAP_S,
        **fields: Any,
    ) -> int:
        """A task; `log_every` is the fraction of the total between plain lines (None: time
        only, for inner loops such as the patches of each slide), `min_gap_s` the least time
        between two of them (0 for training: every epoch's loss is worth a line)."""
        fields.setdefault("info", "")
        with self._lock:
            tid = len(self._tasks)
            self._tasks[tid] = t = _Task(description, total, log_every, min_gap_s, dict(fields))
            if self._bar is not None:
                t.bar_id = self._bar.add_task(description, total=total, **fields)
        return tid

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(
        self,
        task: int,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        with self._lock:
            t = self._tasks[task]
            before = t.completed
            restart = completed is not None and completed < t.completed
            if total is not None and total != t.total or restart:
                t.last_step, t.finished = 0, False  # a reused task (the next slide's patches)
                if restart:
                    t.started = t.last_line = time.monotonic()
            if description is not None:
                t.description = description
            if total is not None:
                t.total = total
            if completed is not None:
                t.completed = completed
            if advance:
                t.completed += advance
            t.fields.update(fields)
            if self._bar is not None:
                kw = {k: v for k, v in (("total", total), ("completed", completed),
                                        ("description", description)) if v is not None}  # fmt: skip
                self._bar.update(t.bar_id, advance=advance, **kw, **fields)
            elif self.mode == "plain" and t.completed > before:  # a line only for work done
                self._maybe_line(t)

    # -- plain lines --------------------------------------------------------------------------
    def _maybe_line(self, t: _Task) -> None:
        now = time.monotonic()
        if t.total and t.completed >= t.total:
            if not t.finished:
                t.finished = True
                self._write(self._done_line(t, now))
            return
        step = int(t.completed / t.total / t.log_every) if t.total and t.log_every else 0
        due = step > t.last_step and now - t.last_line >= t.min_gap_s
        if due or now - t.last_line >= self.interval_s:
            t.last_step = max(step, t.last_step)
            t.last_line = now
            self._write(self._line(t, now))

    def _line(self, t: _Task, now: float) -> str:
        elapsed = max(now - t.started, 1e-9)
        rate = t.completed / elapsed
        parts = [f"{t.description}: {_num(t.completed)}"]
        if t.total:
            parts[0] += f"/{_num(t.total)} ({100 * t.completed / t.total:.0f}%)"
        parts.append(f"{_rate(rate)}")
        if t.total and rate > 0:
            parts.append(f"ETA {_duration((t.total - t.completed) / rate)}")
        if t.fields.get("info"):
            parts.append(str(t.fields["info"]))
        return "  ".join(parts)

    def _done_line(self, t: _Task, now: float) -> str:
        elapsed = max(now - t.started, 1e-9)
        line = f"{t.description}: {_num(t.completed)} done in {_duration(elapsed)}"
        line += f" ({_rate(t.completed / elapsed)})"
        if t.fields.get("info"):
            line += f"  {t.fields['info']}"
        return line

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the work
            pass


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _rate(per_s: float) -> str:
    return f"{per_s:.2f}/s" if per_s >= 0.1 else f"{60 * per_s:.2f}/min"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}" if m else f"{seconds:.1f}s"
