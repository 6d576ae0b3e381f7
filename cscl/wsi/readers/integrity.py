"""Is the slide file whole? Tell an empty or cut-off copy from a format no reader supports.

Why: a truncated .svs looks to OpenSlide like an unknown format, so the user is told which
formats are supported — for a file that *is* an .svs. A TIFF says how long it must be: every
IFD offset and every tile/strip offset + byte count must lie inside the file. Walking the IFD
chain reads a few kB, so `open_slide` does it for every slide before any backend tries.

Only what the file itself promises is checked; formats that are not TIFF (MRXS, DICOM…) are
checked for zero length only. A classic TIFF over 4 GiB (NDPI stores wrapped 32-bit offsets)
cannot be judged by its offsets and is left to the readers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from cscl.errors import SlideError

TRUNCATED_HINT = "the copy is truncated or empty: copy/download it again (and compare its size)"
TIFF_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".svslide", ".qptiff"}
_OFFSET_TAGS = {273: 279, 324: 325}  # StripOffsets → StripByteCounts, TileOffsets → TileByteCounts
_SUBIFDS = 330
_WANTED_TAGS = {*_OFFSET_TAGS, *_OFFSET_TAGS.values(), _SUBIFDS}
_INT_TYPES = {3: "H", 4: "I", 13: "I", 16: "Q", 17: "q", 18: "Q"}  # SHORT LONG IFD LONG8 …
_MAX_IFDS = 4096


class _Truncated(Exception):
    pass


def _tiff_layout(head: bytes) -> tuple[str, bool] | None:
    """(byte order, bigtiff) for a TIFF header, else None."""
    if head[:4] in (b"II*\0", b"MM\0*"):
        return ("<" if head[:2] == b"II" else ">"), False
    if head[:4] in (b"II+\0", b"MM\0+"):
        return ("<" if head[:2] == b"II" else ">"), True
    return None


def _ints(f, size: int, bo: str, typ: int, count: int, inline: bytes, big: bool) -> np.ndarray:
    """The integer values of one IFD entry (inline or at the offset it points to)."""
    code = _INT_TYPES[typ]
    nbytes = struct.calcsize(code) * count
    if nbytes <= (8 if big else 4):
        raw = inline[:nbytes]
    else:
        (at,) = struct.unpack(bo + ("Q" if big else "I"), inline)
        if at + nbytes > size:
            raise _Truncated(f"a tag array at byte {at} runs past the end ({size} bytes)")
        f.seek(at)
        raw = f.read(nbytes)
    return np.frombuffer(raw, np.dtype(code).newbyteorder(bo)).astype(np.uint64)


def _check_tiff(f, size: int, bo: str, big: bool) -> None:
    """Raise `_Truncated` when an IFD or image data lies past the end of the file."""
    f.seek(8 if big else 4)
    (first,) = struct.unpack(bo + ("Q" if big else "I"), f.read(8 if big else 4))
    todo, seen = [first], set()
    n_fmt, entry_fmt, entry_size = ("Q", "HHQ8s", 20) if big else ("H", "HHI4s", 12)
    n_size = struct.calcsize(n_fmt)
    while todo and len(seen) < _MAX_IFDS:
        off = todo.pop()
        if off == 0 or off in seen:
            continue
        seen.add(off)
        if off + n_size > size:
            raise _Truncated(f"its directory (IFD) at byte {off} lies past the end ({size} bytes)")
        f.seek(off)
        (n,) = struct.unpack(bo + n_fmt, f.read(n_size))
        end = off + n_size + n * entry_size + (8 if big else 4)
        if end > size:
            raise _Truncated(f"its directory (IFD) at byte {off} runs past the end ({size} bytes)")
        table = f.read(n * entry_size)
        (nxt,) = struct.unpack(bo + ("Q" if big else "I"), f.read(8 if big else 4))
        entries = {}
        for i in range(n):
            tag, typ, count, inline = struct.unpack(
                bo + entry_fmt, table[i * entry_size : (i + 1) * entry_size]
            )
            if typ in _INT_TYPES and tag in _WANTED_TAGS:
                entries[tag] = (typ, count, inline)
        for otag, ctag in _OFFSET_TAGS.items():
            if otag in entries and ctag in entries:
                offs = _ints(f, size, bo, *entries[otag], big)
                counts = _ints(f, size, bo, *entries[ctag], big)
                k = min(len(offs), len(counts))
                ends = offs[:k] + counts[:k]
                if k and int(ends.max()) > size:
                    missing = int((ends > size).sum())
                    raise _Truncated(
                        f"{missing} of {k} image tiles/strips end past the end of the file "
                        f"(data up to byte {int(ends.max())}, file has {size} bytes)"
                    )
        if _SUBIFDS in entries:
            todo.extend(int(v) for v in _ints(f, size, bo, *entries[_SUBIFDS], big))
        todo.append(nxt)


def why_incomplete(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be a whole slide file (empty, a TIFF cut short), or None if it may be."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(16)
        layout = _tiff_layout(head)
        if layout is None:
            return None
        bo, big = layout
        if len(head) < (16 if big else 8):
            return f"is truncated: it ends inside its TIFF header ({size} bytes)"
        if not big and size > 2**32:
            return None  # NDPI-style: 32-bit offsets wrap, cannot be checked here
        try:
            _check_tiff(f, size, bo, big)
        except _Truncated as exc:
            return f"is truncated: {exc}"
        except (struct.error, KeyError, ValueError, OSError):
            return None  # an unusual structure: the backends judge it
    return None


def check_complete(path: str | os.PathLike) -> None:
    """Raise a SlideError saying "truncated or empty: copy it again" for an incomplete file."""
    why = why_incomplete(path)
    if why:
        raise SlideError(f"slide file {path} {why}", hint=TRUNCATED_HINT)


def describe_unreadable(path: str | os.PathLike) -> str:
    """A clause for the "no reader can read it" error: a slide-named file that is no TIFF."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return ""
    with open(path, "rb") as f:
        head = f.read(16)
    if _tiff_layout(head) is None:
        return f"; it does not start with a TIFF header (first bytes {head[:8]!r})"
    return ""
