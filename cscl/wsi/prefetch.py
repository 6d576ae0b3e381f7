"""Prepare the next slide while the current one runs its forward pass.

Why: opening a slide, segmenting its tissue (1–13 s on big slides), building the grid and
checking its tiles is serial work during which, without overlap, the GPU (or most CPU cores)
idles. `prepared_slides` yields the slides of a run in order, each reuse-checked and prepared
(`cscl.wsi.prepare`), and has the *next* slide that needs work prepared by a helper process
while the caller computes the current one. At most one prepared slide waits ahead.

Why a process, not a thread: extraction forks its DataLoader workers for every slide, and a
fork while another thread of the parent is inside OpenSlide, libjpeg or a lock-holding library
call can leave the child deadlocked; the tile check also points fd 2 at a file while it decodes,
which in a thread would swallow the parent's own stderr. The helper is started once per run
(only when at least two slides need work) with the "spawn" context — no inherited locks, the
current environment (S3 credentials, cache dir) — and talks over one pipe, so the parent gets
no extra thread either. Its start-up (importing torch for the tile check) overlaps the first
slide, which the parent prepares itself.

Outcomes equal the sequential path's: the same functions run, a failure travels back as the
message the sequential path would report, warnings (e.g. an mpp guessed from the objective
power) are re-issued in the parent, and a helper that dies (a native crash on a hostile file)
fails only the slide it was preparing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cscl.io import storage
from cscl.wsi.prepare import (
    PreparedSlide,
    PrepareOptions,
    SlideResult,
    failure_message,
    prepare_slide,
    reusable,
)


@dataclass
class SlideJob:
    """One row of the run: which slide, where its features go."""

    slide_uri: str
    slide_id: str
    stain: str
    mpp: float | None
    out: Path


@dataclass
class SlideStep:
    """A slide, in run order: either `result` (skipped or failed before the forward pass) or
    `prepared` (ready for its forward pass) with the slide's `source` tag."""

    job: SlideJob
    result: SlideResult | None = None
    prepared: PreparedSlide | None = None
    source: str | None = None
    prefetched: bool = False  # prepared by the helper (its time was hidden)


@dataclass
class _Reply:
    prepared: PreparedSlide | None
    error: str | None
    seconds: float
    warnings: list[tuple] = field(default_factory=list)  # (message, category, filename, lineno)


def _prepare_reply(job: SlideJob, opts: PrepareOptions) -> _Reply:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prepared = prepare_slide(job.slide_uri, opts, job.mpp)
            prepared.wsi.close()  # the parent reopens it on its first read
            error = None
        except Exception as exc:  # reported for this slide, as the sequential path does
            prepared, error = None, failure_message(exc, job.slide_uri)
    said = [(str(w.message), _picklable(w.category), w.filename, w.lineno) for w in caught]
    return _Reply(prepared, error, time.perf_counter() - t0, said)


def _picklable(category: type[Warning]) -> type[Warning]:
    try:
        pickle.dumps(category)
    except Exception:  # a warning class defined where the parent cannot import it
        return UserWarning
    return category


def _serve(conn, opts: PrepareOptions, store: storage.Store) -> None:
    """The helper process: prepare each job received until None (or the parent goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it stops us
    storage.configure_store(store)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        reply = _prepare_reply(job, opts)
        try:
            data = pickle.dumps(reply)
        except Exception as exc:  # never seen; a reply that cannot travel fails its slide only
            why = f"the prepared slide cannot be sent back ({type(exc).__name__}: {exc})"
            data = pickle.dumps(_Reply(None, f"{why} (while extracting {job.slide_uri})", 0.0))
        conn.send_bytes(data)


class SlidePreparer:
    """One helper process preparing one slide at a time: `submit(job)`, then `take()`."""

    def __init__(self, opts: PrepareOptions):
        self.opts = opts
        self._proc = None
        self._conn = None
        self.pending: SlideJob | None = None
        self._seen: dict = {}  # warnings already shown
        self.started = 0  # processes started (1 unless one died)
        self.start_seconds = 0.0  # parent time spent starting them
        self.prepared = 0  # slides the helper prepared (or failed to)
        self.prepare_seconds = 0.0  # the helper's time on them
        self.wait_seconds = 0.0  # parent time blocked waiting for them (the rest was hidden)

    def _start(self) -> None:
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, self.opts, storage.current_store()),
            name="cscl-slide-prefetch",
            daemon=True,
        )
        proc.start()
        child.close()  # only the helper holds its end: its death reads as EOF here
        self._proc, self._conn = proc, parent
        self.started += 1
        self.start_seconds += time.perf_counter() - t0

    def submit(self, job: SlideJob) -> None:
        """Send `job` to the helper, starting one if none runs."""
        assert self.pending is None, "one slide at a time"
        if self._proc is None:
            self._start()
        self._conn.send(job)
        self.pending = job

    def take(self) -> tuple[PreparedSlide | None, str | None, float]:
        """(prepared slide, None, seconds) or (None, the failure message, seconds) of the
        pending job; seconds = the helper's time on it."""
        job, self.pending = self.pending, None
        assert job is not None, "nothing submitted"
        t0 = time.perf_counter()
        try:
            reply: _Reply = self._conn.recv()  # what the helper sent with send_bytes
        except (EOFError, OSError):
            self.wait_seconds += time.perf_counter() - t0
            code = self._stop(wait=False)
            return (
                None,
                (
                    f"the slide-preparation process died (exit code {code}) while preparing "
                    f"{job.slide_uri}: the file may crash the slide library; extract it alone with "
                    "--no-prefetch to see the native error"
                ),
                0.0,
            )
        self.wait_seconds += time.perf_counter() - t0
        self.prepared += 1
        self.prepare_seconds += reply.seconds
        for message, category, filename, lineno in reply.warnings:
            # a registry of our own: "default" filters show each message once, as in-process
            warnings.warn_explicit(message, category, filename, lineno, registry=self._seen)
        return reply.prepared, reply.error, reply.seconds

    def _stop(self, wait: bool = True) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return None
        if wait:
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)
        conn.close()
        return proc.exitcode

    def close(self) -> None:
        self._stop(wait=self.pending is None)
        self.pending = None

    def __enter__(self) -> SlidePreparer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _prepare_here(
    job: SlideJob, opts: PrepareOptions
) -> tuple[PreparedSlide | None, str | None, float]:
    t0 = time.perf_counter()
    try:
        prepared, error = prepare_slide(job.slide_uri, opts, job.mpp), None
    except Exception as exc:  # reported for this slide; the run goes on
        prepared, error = None, failure_message(exc, job.slide_uri)
    return prepared, error, time.perf_counter() - t0


def prepared_slides(
    jobs: list[SlideJob],
    opts: PrepareOptions,
    ehash: str,
    *,
    prefetch: bool = True,
    stats: dict | None = None,
) -> Iterator[SlideStep]:
    """Each job in order as a `SlideStep`; with `prefetch`, the next job that needs work is
    prepared by a helper process while the caller handles the current step.

    Reuse checks of later slides run ahead (a stat and an HDF5 header read) to find that next
    job; a slide id seen earlier in the run is checked in its turn instead, since the earlier
    row may still write its file. `stats` (optional) receives counters for benchmarks.
    """
    first = {}
    for i, job in enumerate(jobs):
        first.setdefault(job.out, i)
    checked: dict[int, tuple[bool, str | None, float]] = {}

    def check(i: int) -> tuple[bool, str | None, float]:
        if i not in checked:
            t0 = time.perf_counter()
            reused, source = reusable(jobs[i].slide_uri, jobs[i].out, ehash)
            checked[i] = (reused, source, time.perf_counter() - t0)
        return checked[i]

    helper = SlidePreparer(opts) if prefetch else None
    in_helper: int | None = None

    active = helper is not None

    def submit_after(i: int) -> None:
        """Hand the first later job that needs preparing to the helper (if it is free)."""
        nonlocal in_helper, active
        if not active or in_helper is not None:
            return
        for j in range(i + 1, len(jobs)):
            if first[jobs[j].out] != j:
                return  # a repeated id: its reuse check waits for its turn
            if not check(j)[0]:
                try:
                    helper.submit(jobs[j])
                except Exception as exc:  # e.g. inside a daemonic process: no children allowed
                    helper.close()
                    active = False
                    warnings.warn(
                        f"slide prefetch is off for this run: its helper process did not start "
                        f"({type(exc).__name__}: {exc}); slides are prepared one after the other",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    return
                in_helper = j
                return

    here = 0.0  # seconds spent preparing in this process
    try:
        for i, job in enumerate(jobs):
            reused, source, seconds = check(i)
            if reused:
                res = SlideResult(
                    job.slide_id, job.slide_uri, "skipped", str(job.out), seconds=seconds
                )
                yield SlideStep(job, res)
                continue
            prefetched = in_helper == i
            if prefetched:
                in_helper = None
                prepared, error, spent = helper.take()
                submit_after(i)
            else:
                submit_after(i)  # the helper starts on the next slide while this one is here
                prepared, error, spent = _prepare_here(job, opts)
                here += spent
            seconds += spent
            if prepared is None:
                res = SlideResult(
                    job.slide_id, job.slide_uri, "failed", seconds=seconds, error=error
                )
                yield SlideStep(job, res, source=source, prefetched=prefetched)
            else:
                prepared.seconds = seconds
                yield SlideStep(job, prepared=prepared, source=source, prefetched=prefetched)
            prepared = None  # the caller owns it now: one prepared slide here at a time
    finally:
        if helper is not None:
            helper.close()
        if stats is not None:
            h = helper or SlidePreparer(opts)
            stats.update(
                prepare_here_seconds=here,
                prefetch_processes=h.started,
                prefetch_start_seconds=h.start_seconds,
                prefetch_slides=h.prepared,
                prefetch_prepare_seconds=h.prepare_seconds,
                prefetch_wait_seconds=h.wait_seconds,
            )
