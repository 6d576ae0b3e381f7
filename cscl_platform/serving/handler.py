"""TorchServe handler for cscl: a thin host for `cscl.inference.Predictor`.

Requests (POST /predictions/<model>):
    {"slide_uri": "s3://bucket/…/slide.svs", "mpp": 0.25?}  whole H&E slide
    {"features_uri": "s3://bucket/…/slide.h5"}               patch feature file (cscl extract)
    an HDF5 feature file as the request body                  uploaded features
URIs must start with one of the allowed prefixes (CSCL_ALLOWED_PREFIXES); none are allowed by
default, so a fresh server only takes uploads.

Bad input never fails the worker or the rest of a batch: each request gets its own HTTP status
(`context.set_response_status(code, phrase, idx)`) and a JSON body
`{"code": 4xx, "type": "...", "message": "..."}` naming the problem. TorchServe 0.12 finding:
raising `ts.utils.util.PredictionException(msg, code)` from a handler answers *every* request of
the batch with that code and message (ts/service.py builds one response for the whole batch), so
it is kept for failures of the batch as a whole; per-request statuses set on the context are
honoured by the frontend (verified with batch_size 4: 200/400/200/400 in one batch).

Settings (environment of the TorchServe process, or `handler:` in the .mar's model-config.yaml;
the environment wins): CSCL_ALLOWED_PREFIXES (comma-separated s3:// or local prefixes),
CSCL_INFERENCE_LOG_URI (object-store prefix for inference logs; unset: no logs),
CSCL_INFERENCE_LOG_ENDPOINT (its S3 endpoint if not the data one),
CSCL_S3_ENDPOINT / AWS_ENDPOINT_URL, CSCL_MAX_UPLOAD_BYTES (default 128 MiB), CSCL_TOP_K (8),
CSCL_TORCH_THREADS (CPU intra-op threads per worker; default half the usable CPUs).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

logger = logging.getLogger(__name__)

ALLOWED_FIELDS = ("slide_uri", "features_uri", "mpp")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_MAX_UPLOAD = 128 * 1024 * 1024


class RequestFailure(Exception):
    """One request's failure: HTTP status and a message for the client."""

    def __init__(self, code: int, message: str, kind: str = "InputError"):
        super().__init__(message)
        self.code, self.message, self.kind = int(code), message, kind

    def body(self) -> dict:
        return {"code": self.code, "type": self.kind, "message": self.message}


@dataclass
class Settings:
    allowed_prefixes: list[str] = field(default_factory=list)
    log_uri: str | None = None
    endpoint_url: str | None = None
    log_endpoint_url: str | None = None
    max_upload: int = DEFAULT_MAX_UPLOAD
    top_k: int = 8
    torch_threads: int = 0  # 0: half the CPUs this worker may use (at least 1)

    @classmethod
    def load(cls, yaml_cfg: dict | None = None, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        y = dict((yaml_cfg or {}).get("handler") or {})

        def pick(env_key: str, yaml_key: str, default=None):
            v = env.get(env_key)
            return v if v not in (None, "") else y.get(yaml_key, default)

        prefixes = pick("CSCL_ALLOWED_PREFIXES", "allowed_prefixes", [])
        if isinstance(prefixes, str):
            prefixes = [p.strip() for p in prefixes.split(",") if p.strip()]
        endpoint = pick("CSCL_S3_ENDPOINT", "s3_endpoint", env.get("AWS_ENDPOINT_URL"))
        return cls(
            allowed_prefixes=list(prefixes),
            log_uri=pick("CSCL_INFERENCE_LOG_URI", "inference_log_uri"),
            endpoint_url=endpoint,
            log_endpoint_url=pick(
                "CSCL_INFERENCE_LOG_ENDPOINT", "inference_log_endpoint", endpoint
            ),
            max_upload=int(pick("CSCL_MAX_UPLOAD_BYTES", "max_upload_bytes", DEFAULT_MAX_UPLOAD)),
            top_k=int(pick("CSCL_TOP_K", "top_k", 8)),
            torch_threads=int(pick("CSCL_TORCH_THREADS", "torch_threads", 0)),
        )


@dataclass
class Request:
    kind: str  # upload | features_uri | slide_uri
    uri: str | None = None
    data: bytes | None = None
    mpp: float | None = None


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def check_allowed(uri: str, prefixes: list[str]) -> None:
    """Refuse URIs outside the allowed prefixes (403) and schemes we do not read (400)."""
    from cscl.io.storage import local_path

    if "://" in uri and not (_is_s3(uri) or uri.startswith("file://")):
        raise RequestFailure(400, f"unsupported URI scheme in {uri!r}: use s3:// or a file path")
    if not prefixes:
        raise RequestFailure(
            403,
            f"URI inputs are disabled on this server, {uri!r} refused",
            "Forbidden",
        )
    if _is_s3(uri):
        if any(part in ("..", ".") for part in uri[5:].split("/")):
            raise RequestFailure(400, f"{uri!r} contains '.' or '..' path segments")
        ok = any(_is_s3(p) and uri.startswith(p if p.endswith("/") else p + "/") for p in prefixes)
    else:
        real = os.path.realpath(local_path(uri))
        ok = any(
            not _is_s3(p) and real.startswith(os.path.realpath(local_path(p)).rstrip("/") + "/")
            for p in prefixes
        )
    if not ok:
        raise RequestFailure(
            403, f"{uri!r} is outside the allowed locations of this server", "Forbidden"
        )


def parse_request(row: dict, settings: Settings) -> Request:
    """TorchServe's request row → a Request, or RequestFailure (400/403/413) naming the problem."""
    value = row.get("body", row.get("data")) if isinstance(row, dict) else None
    if value is None and isinstance(row, dict) and len(row) == 1:
        value = next(iter(row.values()))  # a single multipart field
    if value is None or (isinstance(value, bytes | bytearray | str) and len(value) == 0):
        raise RequestFailure(
            400, 'empty request: send JSON {"slide_uri": …} or {"features_uri": …}, or an .h5 body'
        )
    if isinstance(value, bytes | bytearray):
        if len(value) > settings.max_upload:
            raise RequestFailure(
                413,
                f"upload of {len(value)} bytes exceeds the limit of {settings.max_upload} bytes",
                "PayloadTooLarge",
            )
        if bytes(value[:8]) == HDF5_MAGIC:
            return Request("upload", data=bytes(value))
        try:
            value = json.loads(bytes(value).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestFailure(
                400, f"request body is neither valid JSON nor an HDF5 feature file ({exc})"
            ) from None
    elif isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RequestFailure(400, f"request body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RequestFailure(400, f"request JSON must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(ALLOWED_FIELDS))
    if unknown:
        raise RequestFailure(
            400, f"unknown field(s) {unknown}; allowed fields: {list(ALLOWED_FIELDS)}"
        )
    given = [k for k in ("slide_uri", "features_uri") if k in value]
    if len(given) != 1:
        raise RequestFailure(400, "give exactly one of 'slide_uri' or 'features_uri'")
    key = given[0]
    uri = value[key]
    if not isinstance(uri, str) or not uri.strip():
        raise RequestFailure(400, f"{key!r} must be a non-empty string")
    mpp = value.get("mpp")
    if mpp is not None:
        if key != "slide_uri":
            raise RequestFailure(400, "'mpp' only goes with 'slide_uri'")
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not 0 < mpp < 100:
            raise RequestFailure(400, f"'mpp' must be a number of µm/px in (0, 100), got {mpp!r}")
    check_allowed(uri, settings.allowed_prefixes)
    return Request(key, uri=uri, mpp=float(mpp) if mpp is not None else None)


def failure_of(exc: Exception) -> RequestFailure:
    """Map cscl errors to HTTP statuses; the message is what the user must see."""
    from cscl.errors import InputError, SlideError, StorageError

    if isinstance(exc, RequestFailure):
        return exc
    msg = str(exc)
    text = msg.lower()
    if isinstance(exc, StorageError | SlideError) and "not found" in text:
        return RequestFailure(404, msg, "NotFound")
    if isinstance(exc, StorageError) and "access denied" in text:
        return RequestFailure(403, msg, "Forbidden")
    if isinstance(exc, StorageError):
        return RequestFailure(502, msg, "StorageError")
    if isinstance(exc, SlideError):
        return RequestFailure(422, msg, "SlideError")
    if isinstance(exc, InputError):
        return RequestFailure(422, msg, "InputError")
    return RequestFailure(500, f"internal error: {type(exc).__name__}: {msg}", "InternalError")


class CsclHandler(BaseHandler):
    """initialize → preprocess (parse + fetch) → inference (batched) → postprocess (statuses)."""

    def initialize(self, context) -> None:
        import torch

        from cscl.inference import Predictor

        props = context.system_properties
        gpu = props.get("gpu_id")
        self.device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        self.settings = Settings.load(getattr(context, "model_yaml_config", None))
        if self.device == "cpu":
            # Few intra-op threads: on a busy or shared CPU, OpenMP threads waiting on each other
            # made one request 5-7x slower with 2 threads than with 1 (benchmarks/serve.py).
            n = self.settings.torch_threads or max(1, len(os.sched_getaffinity(0)) // 2)
            torch.set_num_threads(n)
        self.predictor = Predictor(props["model_dir"], self.device, top_k=self.settings.top_k)
        if self.predictor.pre.get("slide_input", True) and self.settings.allowed_prefixes:
            _ = self.predictor.encoder  # load the backbone now, not on the first slide request
        self.inference_logger = None
        if self.settings.log_uri:
            from cscl.inference_log import InferenceLogger

            self.inference_logger = InferenceLogger(
                self.settings.log_uri, self.settings.log_endpoint_url
            )
        self.initialized = True
        logger.info(
            "cscl model %s loaded on %s (allowed prefixes: %s, inference log: %s)",
            self.predictor.model_version,
            self.device,
            self.settings.allowed_prefixes or "none",
            self.settings.log_uri or "off",
        )

    # ---- the TorchServe entry point -------------------------------------------------------------
    def handle(self, data, context):
        self.context = context
        t0 = time.perf_counter()
        try:
            out = self.postprocess(self.inference(self.preprocess(data)))
        except PredictionException:
            raise
        except Exception as exc:  # a bug: answer 500 with the reason, never the generic 503
            logger.exception("cscl handler failed for the whole batch")
            raise PredictionException(f"internal error: {type(exc).__name__}: {exc}", 500) from exc
        if context.metrics is not None:
            context.metrics.add_time("HandlerTime", round((time.perf_counter() - t0) * 1000, 2))
        return out

    # ---- steps --------------------------------------------------------------------------------
    def _load_features(self, req: Request):
        """SlideFeatures of an upload or a features_uri (size-checked, temp copies removed)."""
        from cscl.errors import CsclError
        from cscl.features import read_features
        from cscl.io import storage

        with tempfile.TemporaryDirectory(prefix="cscl-req-") as tmp:
            if req.kind == "upload":
                path = Path(tmp) / "upload.h5"
                path.write_bytes(req.data)
            else:
                info = storage.stat(req.uri, self.settings.endpoint_url)
                if info.size > self.settings.max_upload:
                    raise RequestFailure(
                        413,
                        f"{req.uri} is {info.size} bytes, above the limit of "
                        f"{self.settings.max_upload} bytes",
                        "PayloadTooLarge",
                    )
                if storage.is_s3(req.uri):
                    path = storage.download(req.uri, Path(tmp) / "features.h5",
                                            self.settings.endpoint_url)  # fmt: skip
                else:
                    path = storage.local_path(req.uri)
            try:
                return read_features(path)
            except CsclError as exc:  # name what the client sent, not our temporary copy
                shown = "the uploaded file" if req.kind == "upload" else req.uri
                raise type(exc)(exc.message.replace(str(path), shown), hint=exc.hint) from None

    def preprocess(self, data):
        items = []
        for row in data:
            try:
                req = parse_request(row, self.settings)
                sf = self._load_features(req) if req.kind != "slide_uri" else None
                if sf is not None:
                    self.predictor.validate(sf, self._source(req))
                items.append((req, sf))
            except Exception as exc:
                items.append(failure_of(exc))
        return items

    @staticmethod
    def _source(req: Request) -> str:
        return "the uploaded feature file" if req.kind == "upload" else f"{req.uri}"

    def inference(self, items):
        results: list = list(items)
        feats = [
            i for i, it in enumerate(items) if isinstance(it, tuple) and it[0].kind != "slide_uri"
        ]
        if feats:
            try:
                outs = self.predictor.predict_many([items[i][1] for i in feats])
                for i, o in zip(feats, outs, strict=True):
                    results[i] = (items[i][0], o)
            except Exception:  # one bad item: fall back to one at a time to isolate it
                for i in feats:
                    try:
                        results[i] = (items[i][0], self.predictor.predict_features(items[i][1]))
                    except Exception as exc:
                        results[i] = failure_of(exc)
        for i, it in enumerate(items):
            if isinstance(it, tuple) and it[0].kind == "slide_uri":
                req = it[0]
                try:
                    results[i] = (req, self.predictor.predict_slide(
                        req.uri, self.settings.endpoint_url, req.mpp))  # fmt: skip
                except Exception as exc:
                    results[i] = failure_of(exc)
        return results

    def postprocess(self, results):
        from cscl.inference_log import make_record

        out = []
        for idx, res in enumerate(results):
            rid = self.context.get_request_id(idx) if self.context is not None else None
            if isinstance(res, RequestFailure):
                if res.code >= 500:
                    logger.error("request %s failed: %s", rid, res.message)
                self.context.set_response_status(res.code, HTTPStatus(res.code).phrase, idx)
                out.append(res.body())
                continue
            req, answer = res
            answer["request_id"] = rid
            answer["input"] = req.kind
            answer["batch_size"] = len(results)  # how many requests TorchServe batched with it
            if self.inference_logger is not None:
                rec = make_record(answer, rid, uri=req.uri, source=req.kind)
                self.inference_logger.log(rec)  # never blocks, never raises on store errors
            out.append(answer)
        return out


_service = CsclHandler()


def handle(data, context):
    """Function entry point (`--handler handler.py:handle`): the module holds several classes,
    and TorchServe's class discovery wants exactly one. Called with data=None to initialise."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
