"""Reader backends by name, and `open_slide`, which picks one per slide.

`backend="auto"` tries the registered backends in priority order (OpenSlide first: it knows the
most vendor formats) and keeps the first that opens the file; a name forces that backend. A
backend registered with `auto=False` (cuCIM) is used only when named.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cscl.errors import InputError, SlideError, StorageError
from cscl.io import storage
from cscl.wsi.readers.base import SlideReader, UnsupportedSlide
from cscl.wsi.readers.integrity import TRUNCATED_HINT, check_complete, describe_unreadable

_READERS: dict[str, tuple[int, type[SlideReader]]] = {}
_OPT_IN: set[str] = set()  # registered with auto=False: never tried by backend="auto"
_UNAVAILABLE: dict[str, str] = {}  # plug-in module → why it could not be imported


def register_reader(
    name: str, *, priority: int = 100, auto: bool = True
) -> Callable[[type[SlideReader]], type[SlideReader]]:
    """Class decorator: `@register_reader("tifffile", priority=20)`; lower priority is tried
    first by `backend="auto"`; `auto=False`: only used when asked for by name."""

    def deco(cls: type[SlideReader]) -> type[SlideReader]:
        if name in _READERS and _READERS[name][1] is not cls:
            raise ValueError(f"slide reader {name!r} is registered twice")
        cls.name = name
        _READERS[name] = (priority, cls)
        if not auto:
            _OPT_IN.add(name)
        return cls

    return deco


def list_readers(auto: bool = False) -> list[str]:
    """Registered backend names in priority order (`auto=True`: only those `backend="auto"`
    tries, in the order it tries them)."""
    names = [n for n, _ in sorted(_READERS.items(), key=lambda kv: (kv[1][0], kv[0]))]
    return [n for n in names if n not in _OPT_IN] if auto else names


def reader_class(name: str) -> type[SlideReader]:
    if name not in _READERS:
        missing = "".join(f"; {m} unavailable: {why}" for m, why in _UNAVAILABLE.items())
        raise InputError(
            f"unknown slide reader {name!r}{missing}",
            hint=f"use auto or one of: {', '.join(list_readers())}",
        )
    return _READERS[name][1]


def _checked_path(uri: str):
    """The local file of `uri`, refused early when it is missing, a folder, unreadable, empty
    or truncated (each with its own advice)."""
    try:
        path = storage.fetch(uri) if storage.is_s3(uri) else storage.local_path(uri)
    except StorageError as exc:
        raise SlideError(f"cannot fetch slide {uri}: {exc.message}", hint=exc.hint) from exc
    if not path.exists():
        raise SlideError(f"slide file not found: {path}", hint="check the slide_uri / path")
    if path.is_dir():
        raise SlideError(
            f"{path} is a directory, not a slide file",
            hint="point to the slide file itself (for MRXS: the .mrxs file next to its folder)",
        )
    if not path.is_file():
        raise SlideError(f"{path} is not a regular file", hint="point to the slide file itself")
    if not os.access(path, os.R_OK):
        raise SlideError(
            f"cannot read slide {path}: permission denied",
            hint="make the file readable by this user (chmod/chown) or copy it",
        )
    check_complete(path)
    return path


def _open_with(cls: type[SlideReader], path, uri: str, mpp: float | None) -> SlideReader:
    reader = cls(path, uri=uri, mpp=mpp)
    try:
        reader.check_readable()
    except Exception:
        reader.close()
        raise
    return reader


def open_slide(
    uri_or_path: str | os.PathLike, backend: str = "auto", mpp: float | None = None
) -> SlideReader:
    """Open a slide (local path, file:// or s3://) with `backend` and resolve its level-0 mpp.

    The smallest pyramid level is read once so a truncated file fails here, not mid-extraction.
    `auto` moves on to the next backend only when one cannot open the file at all; an error
    about the slide itself (no mpp, unreadable tiles) is reported as it is.
    """
    uri = str(uri_or_path)
    backend = backend or "auto"
    if backend != "auto":
        return _open_with(reader_class(backend), _checked_path(uri), uri, mpp)
    path = _checked_path(uri)
    refused: list[str] = []
    for name in list_readers(auto=True):
        try:
            return _open_with(_READERS[name][1], path, uri, mpp)
        except UnsupportedSlide as exc:
            refused.append(f"{name}: {exc.message}")
    not_tiff = describe_unreadable(path)
    raise SlideError(
        f"{path} is not a slide any reader can read{not_tiff} ({'; '.join(refused)})",
        hint=(
            "it is no slide despite its name (an error page, another format?): " + TRUNCATED_HINT
            if not_tiff
            else "supported: Aperio .svs, generic tiled TIFF, NDPI, MRXS, SCN, … (OpenSlide)"
        ),
    )
