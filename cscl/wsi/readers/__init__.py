"""Slide readers: one `SlideReader` interface, one file per backend, chosen per slide.

    from cscl.wsi.readers import open_slide
    with open_slide("s3://bucket/slide.svs", backend="auto", mpp=None) as wsi:
        rgb = wsi.read_region((x, y), level, (w, h))

Backends: every public module here except `base`/`registry` is imported and registers itself
with `@register_reader(name)`; adding cuCIM or a DICOM reader is one new file.
"""

from __future__ import annotations

import sys

from cscl.plugins import import_plugins
from cscl.wsi.readers import registry
from cscl.wsi.readers.base import (
    MPP_RANGE,
    SlideInfo,
    SlideReader,
    UnsupportedSlide,
    implausible_mpp,
    resolve_mpp,
)
from cscl.wsi.readers.registry import list_readers, open_slide, reader_class, register_reader

registry._UNAVAILABLE.update(
    import_plugins(sys.modules[__name__], skip=frozenset({"base", "integrity", "registry"}))
)

__all__ = [
    "MPP_RANGE",
    "SlideInfo",
    "SlideReader",
    "UnsupportedSlide",
    "implausible_mpp",
    "list_readers",
    "open_slide",
    "reader_class",
    "register_reader",
    "resolve_mpp",
]
