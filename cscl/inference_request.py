"""What a client may ask a served model for, and what it may point the server at.

Server-agnostic: TorchServe's handler, a test or any other host turn a request body into a
`Request` with `parse_request`, which raises `InputError` with a `kind` (MALFORMED, FORBIDDEN,
TOO_LARGE) the host maps to its own status codes. Three forms (docs/CONTRACTS.md "Inference API"):

    {"slide_uri": "s3://bucket/…/slide.svs", "mpp": 0.25?}  whole H&E slide
    {"features_uri": "s3://bucket/…/slide.h5"}               patch feature file (cscl extract)
    an HDF5 feature file as the body                          uploaded features

URIs must lie under one of the policy's allowed prefixes; none are allowed by default, so a
fresh server only takes uploads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

from cscl.errors import ErrorKind, InputError
from cscl.io import storage

ALLOWED_FIELDS = ("slide_uri", "features_uri", "mpp")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_MAX_BYTES = 128 * 1024 * 1024

Source = Literal["upload", "features_uri", "slide_uri"]


@dataclass(frozen=True)
class RequestPolicy:
    """Where URIs may point and how large a feature file may be (uploaded or referenced)."""

    allowed_prefixes: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Request:
    """One prediction request, whatever the transport."""

    source: Source
    uri: str | None = None
    data: bytes | None = field(default=None, repr=False)
    mpp: float | None = None

    def describe(self) -> str:
        """How errors name the input: the client's URI, never a server-side temporary copy."""
        return "the uploaded file" if self.source == "upload" else str(self.uri)


def _malformed(message: str) -> InputError:
    return InputError(message, kind=ErrorKind.MALFORMED)


def check_allowed(uri: str, prefixes: tuple[str, ...] | list[str]) -> None:
    """Refuse URIs outside the allowed prefixes (FORBIDDEN) and schemes we do not read."""
    if "://" in uri and not (storage.is_s3(uri) or uri.startswith("file://")):
        raise _malformed(f"unsupported URI scheme in {uri!r}: use s3:// or a file path")
    if not prefixes:
        raise InputError(
            f"URI inputs are disabled on this server, {uri!r} refused", kind=ErrorKind.FORBIDDEN
        )
    if storage.is_s3(uri):
        if any(part in ("..", ".") for part in uri[5:].split("/")):
            raise _malformed(f"{uri!r} contains '.' or '..' path segments")
        ok = any(
            storage.is_s3(p) and uri.startswith(p if p.endswith("/") else p + "/") for p in prefixes
        )
    else:
        real = os.path.realpath(storage.local_path(uri))
        ok = any(
            not storage.is_s3(p)
            and real.startswith(os.path.realpath(storage.local_path(p)).rstrip("/") + "/")
            for p in prefixes
        )
    if not ok:
        raise InputError(
            f"{uri!r} is outside the allowed locations of this server", kind=ErrorKind.FORBIDDEN
        )


def parse_request(value: bytes | bytearray | str | dict | None, policy: RequestPolicy) -> Request:
    """A request body (bytes, JSON text or an already-decoded object) → a Request."""
    if value is None or (isinstance(value, bytes | bytearray | str) and len(value) == 0):
        raise _malformed(
            'empty request: send JSON {"slide_uri": …} or {"features_uri": …}, or an .h5 body'
        )
    if isinstance(value, bytes | bytearray):
        if len(value) > policy.max_bytes:
            raise InputError(
                f"upload of {len(value)} bytes exceeds the limit of {policy.max_bytes} bytes",
                kind=ErrorKind.TOO_LARGE,
            )
        if bytes(value[:8]) == HDF5_MAGIC:
            return Request("upload", data=bytes(value))
        try:
            value = json.loads(bytes(value).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _malformed(
                f"request body is neither valid JSON nor an HDF5 feature file ({exc})"
            ) from None
    elif isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _malformed(f"request body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _malformed(f"request JSON must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(ALLOWED_FIELDS))
    if unknown:
        raise _malformed(f"unknown field(s) {unknown}; allowed fields: {list(ALLOWED_FIELDS)}")
    given = [k for k in ("slide_uri", "features_uri") if k in value]
    if len(given) != 1:
        raise _malformed("give exactly one of 'slide_uri' or 'features_uri'")
    key = given[0]
    uri = value[key]
    if not isinstance(uri, str) or not uri.strip():
        raise _malformed(f"{key!r} must be a non-empty string")
    mpp = value.get("mpp")
    if mpp is not None:
        if key != "slide_uri":
            raise _malformed("'mpp' only goes with 'slide_uri'")
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not 0 < mpp < 100:
            raise _malformed(f"'mpp' must be a number of µm/px in (0, 100), got {mpp!r}")
    check_allowed(uri, policy.allowed_prefixes)
    return Request(key, uri=uri, mpp=float(mpp) if mpp is not None else None)
