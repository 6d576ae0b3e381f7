"""Prepare the next slide while the current one runs its forward pass.

Why: opening a slide, segmenting its tissue (1–13 s on big slides), building the grid and
checking its tiles is serial work during which, without overlap, the GPU (or most CPU cores)
idles. `SlidePipeline` yields the slides of a run in order, each reuse-checked and prepared
(`cscl.wsi.prepare`), and has the *next* slide that needs work prepared by a helper process
while the caller computes the current one. At most one prepared slide waits ahead.

Why a process, not a thread: extraction forks its DataLoader workers for every slide, and a
fork while another thread of the parent is inside OpenSlide, libjpeg or a lock-holding library
call can leave the child deadlocked; the tile check also points fd 2 at a file while it decodes,
which in a thread would swallow the parent's own stderr. The helper is started once per run
(only when a second slide needs work) with the "spawn" context — no inherited locks, the
current environment (S3 credentials, cache dir) — and talks over one pipe, so the parent gets
no extra thread either. Its start-up (importing torch and torchvision for the tile check:
~4 CPU-s on the shared dev box) is never waited for: until the helper says it is up, slides
are prepared in turn as without it.

Outcomes equal the sequential path's: the same functions run, a failure travels back as the
message the sequential path would report, warnings (e.g. an mpp guessed from the objective
power) are re-issued in the parent, and a helper that dies (a native crash on a hostile file)
fails only the slide it was preparing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import resource
import signal
import sys
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
    """The helper process: say it is up, then prepare each job received until None (or until
    the parent goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it stops us
    storage.configure_store(store)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(("ready", usage.ru_utime + usage.ru_stime))  # start-up CPU (imports)
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


@contextlib.contextmanager
def _main_hidden():
    """Start a spawned process without it re-running the parent's `__main__`.

    spawn re-imports the parent's main script in the child (multiprocessing's preparation data);
    a user's script that calls `extract_slides` without an `if __name__ == "__main__"` guard
    would then run again, whole, inside the helper. The helper needs only cscl, so the main
    module's name and path are hidden while it starts.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if main and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class SlidePreparer:
    """One helper process preparing one slide at a time: `start()`, `ready()`, `submit(job)`,
    `take()`. Never blocks on the helper's start-up: `ready()` only looks."""

    def __init__(self, opts: PrepareOptions):
        self.opts = opts
        self._proc = None
        self._conn = None
        self._ready = False
        self.failed_to_start = False  # a helper died before it was up: do not try again
        self.pending: SlideJob | None = None
        self._seen: dict = {}  # warnings already shown
        self.started = 0  # processes started (1 unless one died)
        self.startup_cpu_seconds = 0.0  # the helpers' CPU before their first job (imports)
        self.prepared = 0  # slides the helper prepared (or failed to)
        self.prepare_seconds = 0.0  # the helper's time on them
        self.wait_seconds = 0.0  # parent time blocked waiting for them (the rest was hidden)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, wait: bool = False) -> None:
        """Start a helper unless one runs; with `wait`, block until it is up."""
        if self._proc is None:
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(child, self.opts, storage.current_store()),
                name="cscl-slide-prefetch",
                daemon=True,
            )
            with _main_hidden():
                proc.start()
            child.close()  # only the helper holds its end: its death reads as EOF here
            self._proc, self._conn, self._ready = proc, parent, False
            self.started += 1
        if wait and not self.ready(timeout=None):
            raise RuntimeError(f"the slide-preparation process exited ({self._exit_code})")

    def ready(self, timeout: float | None = 0.0) -> bool:
        """Whether the helper is up (has imported what it needs); waits at most `timeout`
        seconds (None: until it is). False for ever once a helper died before being up."""
        if self._ready or self._conn is None:
            return self._ready
        try:
            if not self._conn.poll(timeout):
                return False
            msg = self._conn.recv()
        except (EOFError, OSError):
            self._exit_code = self._stop(wait=False)
            self.failed_to_start = True
            return False
        self._ready = True
        self.startup_cpu_seconds += float(msg[1])
        return True

    def submit(self, job: SlideJob) -> None:
        """Send `job` to the helper, which must be up and free."""
        assert self._ready and self.pending is None, "submit to a free helper that is up"
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

    _exit_code: int | None = None

    def _stop(self, wait: bool = True) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self._ready = False
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


# CPU seconds a helper spends starting (importing torch and torchvision for the tile check):
# 3.8–4.6 s measured on the shared 2-core dev box (benchmarks/extract_slides.py)
HELPER_START_SECONDS = 4.0
# "auto": start a helper once it can pay off (see SlidePipeline._worth_starting), never wait
# for it; "eager": start it when a second slide needs work, never wait (benchmarks); "wait":
# start it then and wait until it is up, so it prepares every slide after the first (tests)
HELPER_MODES = ("auto", "eager", "wait")


class SlidePipeline:
    """The slides of a run, in order, as `SlideStep`s (iterate once); with `prefetch`, the next
    slide that needs work is prepared by a helper process while the caller computes the
    current one. Call `poke()` now and then during a forward pass (every batch is fine: it only
    looks at a pipe): the helper gets its next slide as soon as it is up, and the caller never
    waits for the helper's start-up — a slide the helper has not got yet is prepared in turn.
    `helper` (HELPER_MODES) decides when the helper starts; "auto" starts it only when the
    preparation still ahead is worth its start-up cost.

    Reuse checks of later slides run ahead (a stat and an HDF5 header read) to find that next
    slide; a slide id seen earlier in the run is checked in its turn instead, since the earlier
    row may still write its file.
    """

    def __init__(
        self,
        jobs: list[SlideJob],
        opts: PrepareOptions,
        ehash: str,
        *,
        prefetch: bool = True,
        helper: str = "auto",
    ):
        if helper not in HELPER_MODES:
            raise ValueError(f"helper must be one of {HELPER_MODES}, got {helper!r}")
        self.jobs, self.opts, self.ehash = jobs, opts, ehash
        self.mode = helper
        self._first: dict[Path, int] = {}
        for i, job in enumerate(jobs):
            self._first.setdefault(job.out, i)
        self._checked: dict[int, tuple[bool, str | None, float]] = {}
        self.helper = SlidePreparer(opts) if prefetch else None  # None: off (or given up)
        self._counters = self.helper or SlidePreparer(opts)
        self._in_helper: int | None = None  # the row the helper prepares
        self._pos = -1  # the row the caller has
        self.here_seconds = 0.0  # preparing in this process
        self.here_slides = 0

    def _check(self, i: int) -> tuple[bool, str | None, float]:
        if i not in self._checked:
            t0 = time.perf_counter()
            reused, source = reusable(self.jobs[i].slide_uri, self.jobs[i].out, self.ehash)
            self._checked[i] = (reused, source, time.perf_counter() - t0)
        return self._checked[i]

    def _next_to_prepare(self) -> int | None:
        for j in range(self._pos + 1, len(self.jobs)):
            if self._first[self.jobs[j].out] != j:
                return None  # a repeated id: its reuse check waits for its turn
            if not self._check(j)[0]:
                return j
        return None

    def _worth_starting(self) -> bool:
        """ "auto": only when the preparation still ahead — the mean so far here times the rows
        left — is at least twice the helper's start-up cost; tiny slides never pay for it."""
        if self.mode != "auto" or self.helper.started:
            return True
        if not self.here_slides:
            return False  # no measurement yet: asked again during the first forward pass
        ahead = self.here_seconds / self.here_slides * (len(self.jobs) - self._pos - 1)
        return ahead >= 2 * HELPER_START_SECONDS

    def poke(self) -> None:
        """Start the helper when a later slide needs work, and hand it that slide once it is
        up and free. Cheap; never blocks."""
        helper = self.helper
        if helper is None or self._in_helper is not None:
            return
        j = self._next_to_prepare()
        if j is None:
            return
        if not helper.running and not self._worth_starting():
            return
        try:
            if helper.failed_to_start:
                raise RuntimeError(f"it exited with code {helper._exit_code} before it was up")
            helper.start(wait=self.mode == "wait")
            if not helper.ready():
                return
            helper.submit(self.jobs[j])
        except Exception as exc:  # e.g. a daemonic process may not have children
            helper.close()
            self.helper = None
            warnings.warn(
                f"slide prefetch is off for this run: its helper process did not start "
                f"({type(exc).__name__}: {exc}); slides are prepared one after the other",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self._in_helper = j

    def __iter__(self) -> Iterator[SlideStep]:
        for i, job in enumerate(self.jobs):
            self._pos = i
            reused, source, seconds = self._check(i)
            if reused:
                res = SlideResult(
                    job.slide_id, job.slide_uri, "skipped", str(job.out), seconds=seconds
                )
                yield SlideStep(job, res)
                continue
            prefetched = self._in_helper == i
            if prefetched:
                self._in_helper = None
                prepared, error, spent = self.helper.take()
                self.poke()
            else:
                self.poke()  # the helper starts (or takes the next slide) while this one is here
                prepared, error, spent = _prepare_here(job, self.opts)
                self.here_seconds += spent
                self.here_slides += 1
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

    def close(self) -> None:
        """Stop the helper (also when the run ends early)."""
        if self.helper is not None:
            self.helper.close()

    def stats(self) -> dict:
        """Counters for benchmarks: time preparing here, in the helper, waiting for it."""
        h = self._counters
        return {
            "prepare_here_seconds": self.here_seconds,
            "prefetch_processes": h.started,
            "prefetch_startup_cpu_seconds": h.startup_cpu_seconds,
            "prefetch_slides": h.prepared,
            "prefetch_prepare_seconds": h.prepare_seconds,
            "prefetch_wait_seconds": h.wait_seconds,
        }
