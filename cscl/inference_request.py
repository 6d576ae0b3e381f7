"""What a client may ask a served model for, and what it may point the server at.

Server-agnostic: TorchServe's handler, a test or any other host turn a request body into a
`Request` with `parse_request`, which raises `InputError` with a `kind` (MALFORMED, FORBIDDEN,
TOO_LARGE) the host maps to its own status codes. Three forms (docs/CONTRACTS.md "Inference API"):

    {"slide_uri": "s3://bucket/…/slide.svs", "mpp": 0.25?}  whole H&E slide
    {"features_uri": "s3://bucket/…/slide.h5"}               patch feature file (cscl extract)
    an HDF5 feature file as the body                          uploaded features

URIs must lie under one of the policy's allowed prefixes; none are allowed by default, so a
fresh server only takes uploads.

A request may only cause bounded work (`RequestPolicy`, docs/SECURITY.md): a JSON body is at
most `max_json_bytes` and `MAX_JSON_DEPTH` deep (checked before `json.loads`, whose recursion a
deeply nested body would exhaust); an uploaded or referenced feature file may hold at most
`max_patches` patches and `max_decompressed_bytes` of data once its (gzip) chunks are inflated —
read from the HDF5 metadata before any chunk is; a whole slide may yield at most `max_patches`
patches, `max_read_pixels` pixels read, and `max_seconds` of work (`cscl.inference`).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Literal

import h5py

from cscl.errors import ErrorKind, InputError
from cscl.io import storage

ALLOWED_FIELDS = ("slide_uri", "features_uri", "mpp")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
# A valid JSON request is one flat object of three short fields: far below these bounds.
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8
# µm/px a client may claim for a slide: 0.1 (100x oil objective) to 10 (1x objective).
# Anything else is a typo or a slide without calibration, and would make a request's patch
# grid explode (mpp 99 at 0.5 µm/px target: ~40,000x the patches of a 40x slide).
MPP_RANGE = (0.1, 10.0)

Source = Literal["upload", "features_uri", "slide_uri"]


@dataclass(frozen=True)
class RequestPolicy:
    """Where URIs may point and how much work one request may cause (its budget).

    The defaults let a large real slide through on a GPU (a 20x20 mm tissue area at 0.5 µm/px in
    224 px patches is ~32,000 patches) and stop the runaway cases: a claimed or tagged
    resolution that is off by orders of magnitude, a gzip bomb of features, a slide that would
    hold the only worker past the frontend's response timeout (900 s: keep max_seconds below it).
    """

    allowed_prefixes: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    max_json_bytes: int = MAX_JSON_BYTES
    max_patches: int = 50_000
    max_decompressed_bytes: int = 512 * 1024 * 1024
    max_read_pixels: int = 4_000_000_000  # pixels read from the slide for all patches together
    max_seconds: float = 600.0  # whole-slide feature extraction of one request


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


def _too_large(message: str, hint: str | None = None) -> InputError:
    return InputError(message, hint=hint, kind=ErrorKind.TOO_LARGE)


def _short(value: object, n: int = 60) -> str:
    """repr of a client value for an error message, cut to `n` characters."""
    text = repr(value) if not isinstance(value, list | dict) else type(value).__name__
    return text if len(text) <= n else text[: n - 1] + "…"


def json_depth(text: str) -> int:
    """Deepest nesting of [ and { in JSON text, ignoring brackets inside strings (linear, no
    recursion: measured before `json.loads`, whose C scanner recurses once per level)."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _object_depth(value: object) -> int:
    """Nesting depth of an already-decoded JSON value (iterative)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            d += 1
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                break
            stack.extend((c, d) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _check_json_depth(text: str) -> None:
    if json_depth(text) > MAX_JSON_DEPTH:
        raise _malformed(
            f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels; "
            'send a flat object {"slide_uri": …} or {"features_uri": …}'
        )


def _check_json_size(n: int, policy: RequestPolicy) -> None:
    if n > policy.max_json_bytes:
        raise _too_large(
            f"JSON request of {n} bytes exceeds the limit of {policy.max_json_bytes}",
            hint='a request is {"slide_uri": …} or {"features_uri": …}; upload features as .h5',
        )


def _loads(text: str, policy: RequestPolicy) -> object:
    """json.loads within the policy's size and depth; every failure is MALFORMED/TOO_LARGE."""
    _check_json_depth(text[: policy.max_json_bytes])
    _check_json_size(len(text.encode("utf-8", "surrogatepass")), policy)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _malformed(f"request body is not valid JSON ({str(exc)[:200]})") from None


def check_feature_file_budget(source: str | os.PathLike | bytes, policy: RequestPolicy,
                              name: str) -> None:  # fmt: skip
    """Refuse a feature file whose datasets would inflate beyond the budget (TOO_LARGE).

    HDF5 stores each dataset's shape and type in its metadata, so the decompressed size of
    gzip-compressed chunks is known before any chunk is inflated: 2 MiB of compressed zeros
    can claim gigabytes, and are refused here without reading them.
    """
    try:
        f = h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r")
    except (OSError, ValueError):
        return  # not readable as HDF5: read_features names the problem (INPUT)
    total, patches = 0, 0
    with f:
        datasets: list[h5py.Dataset] = []
        f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        for ds in datasets:
            total += int(ds.size) * ds.dtype.itemsize
        if isinstance(f.get("features"), h5py.Dataset) and f["features"].ndim >= 1:
            patches = int(f["features"].shape[0])
    if patches > policy.max_patches:
        raise _too_large(
            f"{name} holds {patches} patches, above this server's limit of {policy.max_patches}",
            hint="split the slide's features, or ask the operator to raise CSCL_MAX_PATCHES",
        )
    if total > policy.max_decompressed_bytes:
        raise _too_large(
            f"{name} expands to {total} bytes, above this server's limit of "
            f"{policy.max_decompressed_bytes} bytes",
            hint="send float16/float32 features of one slide; ask the operator to raise "
            "CSCL_MAX_DECOMPRESSED_BYTES for larger ones",
        )


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
            data = bytes(value)
            check_feature_file_budget(data, policy, "the uploaded file")
            return Request("upload", data=data)
        head = bytes(value[: policy.max_json_bytes]).decode("utf-8", "replace")
        _check_json_depth(head)  # a deep body is malformed whatever its size
        _check_json_size(len(value), policy)
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _malformed(
                f"request body is neither valid JSON nor an HDF5 feature file ({exc})"
            ) from None
        try:
            value = _loads(text, policy)
        except InputError as exc:
            if exc.kind != ErrorKind.MALFORMED or "nested" in str(exc):
                raise
            raise _malformed(
                f"request body is neither valid JSON nor an HDF5 feature file ({exc})"
            ) from None
    elif isinstance(value, str):
        value = _loads(value, policy)
    elif isinstance(value, dict | list) and _object_depth(value) > MAX_JSON_DEPTH:
        raise _malformed(f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise _malformed(f"request JSON must be an object, got {type(value).__name__}")
    unknown = sorted(_short(k, 40) for k in set(value) - set(ALLOWED_FIELDS))
    if unknown:
        shown = "[" + ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "") + "]"
        raise _malformed(f"unknown field(s) {shown}; allowed fields: {list(ALLOWED_FIELDS)}")
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
        lo, hi = MPP_RANGE
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not lo <= mpp <= hi:
            raise _malformed(
                f"'mpp' must be a number of µm/px within [{lo}, {hi}] (a microscope's range: "
                f"0.25 at 40x, 0.5 at 20x), got {_short(mpp)}"
            )
    check_allowed(uri, policy.allowed_prefixes)
    return Request(key, uri=uri, mpp=float(mpp) if mpp is not None else None)


# ---- KServe protocols ---------------------------------------------------------------------------
# TorchServe 0.12 routes POST /v1/models/<m>:predict and /v2/models/<m>/infer to the handler with
# the body untouched (no service_envelope: its envelopes keep only the first request of a batch).
# A body is a KServe envelope when it is a JSON object with "instances" (v1) or "inputs" (v2);
# neither is a field of our own form, so the three forms cannot be confused.
Protocol = Literal["torchserve", "v1", "v2"]
MAX_INSTANCES = 16  # requests one envelope may carry (each may be a whole slide)
V2_JSON_INPUT = "request"  # conventional name of the BYTES input holding a JSON request
V2_OUTPUT = "result"  # the BYTES output: one JSON answer per request


@dataclass(frozen=True)
class Envelope:
    """How one HTTP body wrapped its requests, so the answers can be wrapped the same way."""

    protocol: Protocol
    items: tuple = ()  # request bodies for `parse_request`, in order
    id: str | None = None  # v2 request id, echoed in the response


def _as_json_object(value: object, policy: RequestPolicy) -> object:
    """A JSON body decoded (within the policy), or `value` unchanged when it is not JSON text."""
    if isinstance(value, bytes | bytearray):
        if bytes(value[:8]) == HDF5_MAGIC or len(value) > policy.max_json_bytes:
            return value
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, str):
        try:
            return _loads(value, policy)
        except InputError:
            return value  # parse_request names the problem
    return value


def _v2_items(body: dict) -> tuple:
    """v2 `inputs` → request bodies: one BYTES tensor of JSON requests, or named inputs."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise _malformed(
            "'inputs' must be a non-empty list of tensors {name, shape, datatype, data}"
        )
    tensors: dict[str, dict] = {}
    for t in inputs:
        name, data = t.get("name"), t.get("data")
        if not isinstance(name, str) or not isinstance(data, list) or not data:
            raise _malformed("each input needs a string 'name' and a non-empty 'data' list")
        if name in tensors:
            raise _malformed(f"input {_short(name)} is given twice")
        tensors[name] = t
    named = set(tensors) & set(ALLOWED_FIELDS)
    if not named:
        if len(tensors) != 1:
            raise _malformed(
                f"send one BYTES input (e.g. {V2_JSON_INPUT!r}) of JSON requests, or inputs "
                f"named {list(ALLOWED_FIELDS)}; got {sorted(_short(n, 40) for n in tensors)}"
            )
        (t,) = tensors.values()
        if t.get("datatype") != "BYTES" or not all(isinstance(d, str) for d in t["data"]):
            raise _malformed(f"input {_short(t['name'])} must be BYTES holding JSON requests")
        return tuple(t["data"])
    if set(tensors) - named:
        extra = sorted(_short(n, 40) for n in set(tensors) - named)
        raise _malformed(f"unknown input(s) {extra}; named inputs are {list(ALLOWED_FIELDS)}")
    item: dict = {}
    for name, t in tensors.items():
        want = ("FP32", "FP64") if name == "mpp" else ("BYTES",)
        if t.get("datatype") not in want or len(t["data"]) != 1:
            raise _malformed(f"input {name!r} must be one {' or '.join(want)} value")
        item[name] = t["data"][0]
    return (item,)


def open_envelope(value: object, policy: RequestPolicy) -> Envelope:
    """One HTTP body → its protocol and the request bodies it carries (MALFORMED if broken).

    Our own form is one request; KServe v1 `{"instances": [req, …]}` and v2
    `{"inputs": [...], "id"?: …}` carry up to MAX_INSTANCES. Items still go through
    `parse_request`, so every policy check applies to each one.
    """
    body = _as_json_object(value, policy)
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        return Envelope("torchserve", (value,))
    if "instances" in body:
        if set(body) - {"instances", "parameters"}:
            raise _malformed('a v1 request is {"instances": [...]} and nothing else')
        items = body["instances"]
        if not isinstance(items, list) or not items:
            raise _malformed("'instances' must be a non-empty list of requests")
        envelope = Envelope("v1", tuple(items))
    else:
        if set(body) - {"inputs", "id", "parameters", "outputs"}:
            raise _malformed("a v2 request has 'inputs' (and optionally 'id'), nothing else")
        rid = body.get("id")
        envelope = Envelope("v2", _v2_items(body), str(rid) if rid is not None else None)
    if len(envelope.items) > MAX_INSTANCES:
        raise _too_large(
            f"{len(envelope.items)} requests in one body, above the limit of {MAX_INSTANCES}",
            hint="send several HTTP requests; the server batches them",
        )
    return envelope


def close_envelope(envelope: Envelope, answers: list[dict], *, model_name: str,
                   model_version: str, request_id: str | None = None) -> dict | list:  # fmt: skip
    """Answers (Inference API dicts) in the envelope's protocol: v1 `predictions`, v2 `outputs`
    (one BYTES tensor of JSON answers; v2 has no nested objects), our own form unchanged."""
    if envelope.protocol == "v1":
        return {"predictions": answers}
    if envelope.protocol == "v2":
        data = [json.dumps(a) for a in answers]
        return {
            "id": envelope.id or request_id or "",
            "model_name": model_name,
            "model_version": model_version,
            "outputs": [
                {"name": V2_OUTPUT, "shape": [len(data)], "datatype": "BYTES", "data": data}
            ],  # fmt: skip
        }
    (answer,) = answers
    return answer
