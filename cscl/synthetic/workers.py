"""Worker processes that die with the process that started them, and debris a killed run leaves.

Why: a `cscl synth` killed by its parent only (Ctrl-\\, `kill PID`, a timed-out job) used to
leave its pool workers rendering for minutes, and a killed run left temporary files behind that
no rerun removed. Workers now watch the main process (Linux: the kernel sends SIGKILL when their
parent dies; everywhere: a thread polls the main pid), and a run removes the debris of earlier
runs — only its own naming patterns, only in its own folder — under a lock, so it never removes
the files of a run that is still alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from cscl.errors import InputError
from cscl.synthetic.tiff_writer import PYRAMID_TMP_PREFIX

POLL_S = 0.25
_PR_SET_PDEATHSIG = 1
LOCK_NAME = ".cscl-synth.lock"


def _main_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie — killed, not yet reaped — counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the kill(0) answer stands


def _watch(main_pid: int) -> None:
    while _main_alive(main_pid):
        time.sleep(POLL_S)
    os._exit(1)


def die_with(main_pid: int) -> None:
    """Pool initializer: end this worker as soon as `main_pid` is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the parent (forkserver)
    if not _main_alive(main_pid):
        os._exit(1)
    threading.Thread(target=_watch, args=(main_pid,), daemon=True, name="die-with").start()


@contextlib.contextmanager
def exclusive_folder(folder: Path) -> Iterator[None]:
    """Hold an advisory lock on `folder` for one run (released by the kernel if we die)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise InputError(
                f"another `cscl synth` is writing to {folder}",
                hint="wait for it to finish (or stop it), then rerun; finished slides are kept",
            ) from None
        yield
    finally:
        if held:  # a finished run leaves only its cohort behind (a killed one: the kernel unlocks)
            lock.unlink(missing_ok=True)
        os.close(fd)


def remove_debris(folder: Path, final_names: Iterable[str]) -> list[Path]:
    """Delete what a killed run left in `folder`: `.<name>.*.part` temporaries of the given
    final file names (storage.atomic_path) and `.pyr-*` pyramid folders. Returns what went."""
    gone: list[Path] = []
    for name in final_names:
        for p in glob.glob(str(folder / f".{glob.escape(name)}.*.part")):
            Path(p).unlink(missing_ok=True)
            gone.append(Path(p))
    for p in glob.glob(str(folder / f"{PYRAMID_TMP_PREFIX}*")):
        if Path(p).is_dir():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(Path(p))
    return gone
