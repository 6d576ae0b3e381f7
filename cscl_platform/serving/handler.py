"""TorchServe handler for cscl: a thin host for `cscl.inference.Predictor`.

Requests (POST /predictions/<model>) are parsed by `cscl.inference_request.parse_request` and
answered by `Predictor.run`, which returns one `Result` per request: an answer, or an error whose
`kind` (cscl.errors.ErrorKind) `HTTP_STATUS` maps to the HTTP status — the one place where
error kinds become status codes.

Bad input never fails the worker or the rest of a batch: each request gets its own HTTP status
(`context.set_response_status(code, phrase, idx)`) and a JSON body
`{"code": 4xx, "kind": "...", "type": "...", "message": "..."}` naming the problem. TorchServe
0.12 finding: raising `ts.utils.util.PredictionException(msg, code)` from a handler answers
*every* request of the batch with that code and message (ts/service.py builds one response for
the whole batch), so it is kept for failures of the batch as a whole; per-request statuses set on
the context are honoured by the frontend (verified with batch_size 4: 200/400/200/400 in one
batch).

Settings (environment of the TorchServe process, or `handler:` in the .mar's model-config.yaml;
the environment wins): CSCL_ALLOWED_PREFIXES (comma-separated s3:// or local prefixes),
CSCL_INFERENCE_LOG_URI (object-store prefix for inference logs; unset: no logs),
CSCL_INFERENCE_LOG_ENDPOINT (its S3 endpoint if not the data one),
CSCL_S3_ENDPOINT / AWS_ENDPOINT_URL (the process store, configured once at start),
CSCL_MAX_UPLOAD_BYTES (default 128 MiB), CSCL_TOP_K (8),
CSCL_TORCH_THREADS (CPU intra-op threads per worker; default half the usable CPUs).
A request's budget (`cscl.inference_request.RequestPolicy`, defaults there): CSCL_MAX_PATCHES
(patches of a whole slide or a feature file), CSCL_MAX_DECOMPRESSED_BYTES (a feature file once its
chunks are inflated), CSCL_MAX_READ_PIXELS (pixels read for a whole slide), CSCL_MAX_SECONDS
(whole-slide extraction time; keep it below the frontend's response timeout).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from http import HTTPStatus

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from cscl.errors import CsclError, ErrorKind
from cscl.inference import Predictor, Result
from cscl.inference_log import InferenceLogger, make_record
from cscl.inference_request import (
    DEFAULT_MAX_BYTES,
    Envelope,
    Request,
    RequestPolicy,
    close_envelope,
    open_envelope,
    parse_request,
)
from cscl.io import storage
from cscl.runtime import pick_device

logger = logging.getLogger(__name__)

# The one table from error kinds to HTTP statuses (serving/README.md lists when each happens).
HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.MALFORMED: 400,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.INPUT: 422,
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNAVAILABLE: 502,
}


def error_body(err: CsclError) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a failed request."""
    code = HTTP_STATUS[err.kind]
    return code, {"code": code, "kind": str(err.kind), "type": type(err).__name__,
                  "message": str(err)}  # fmt: skip


@dataclass
class Settings:
    allowed_prefixes: list[str] = field(default_factory=list)
    log_uri: str | None = None
    endpoint_url: str | None = None
    log_endpoint_url: str | None = None
    max_upload: int = DEFAULT_MAX_BYTES
    top_k: int = 8
    torch_threads: int = 0  # 0: half the CPUs this worker may use (at least 1)
    max_patches: int = RequestPolicy.max_patches
    max_decompressed_bytes: int = RequestPolicy.max_decompressed_bytes
    max_read_pixels: int = RequestPolicy.max_read_pixels
    max_seconds: float = RequestPolicy.max_seconds

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
        return cls(
            allowed_prefixes=list(prefixes),
            log_uri=pick("CSCL_INFERENCE_LOG_URI", "inference_log_uri"),
            endpoint_url=pick("CSCL_S3_ENDPOINT", "s3_endpoint", env.get("AWS_ENDPOINT_URL")),
            log_endpoint_url=pick("CSCL_INFERENCE_LOG_ENDPOINT", "inference_log_endpoint"),
            max_upload=int(pick("CSCL_MAX_UPLOAD_BYTES", "max_upload_bytes", DEFAULT_MAX_BYTES)),
            top_k=int(pick("CSCL_TOP_K", "top_k", 8)),
            torch_threads=int(pick("CSCL_TORCH_THREADS", "torch_threads", 0)),
            max_patches=int(pick("CSCL_MAX_PATCHES", "max_patches", cls.max_patches)),
            max_decompressed_bytes=int(
                pick(
                    "CSCL_MAX_DECOMPRESSED_BYTES",
                    "max_decompressed_bytes",
                    cls.max_decompressed_bytes,
                )  # fmt: skip
            ),
            max_read_pixels=int(
                pick("CSCL_MAX_READ_PIXELS", "max_read_pixels", cls.max_read_pixels)
            ),  # fmt: skip
            max_seconds=float(pick("CSCL_MAX_SECONDS", "max_seconds", cls.max_seconds)),
        )

    @property
    def policy(self) -> RequestPolicy:
        budget = {name: getattr(self, name) for name in _BUDGET}
        return RequestPolicy(tuple(self.allowed_prefixes), self.max_upload, **budget)


_BUDGET = ("max_patches", "max_decompressed_bytes", "max_read_pixels", "max_seconds")


def request_body(row):
    """The body of one TorchServe request row (raw body, or a single multipart field)."""
    if not isinstance(row, dict):
        return None
    value = row.get("body", row.get("data"))
    if value is None and len(row) == 1:
        value = next(iter(row.values()))
    return value


def open_rows(rows: list, policy: RequestPolicy) -> list[Envelope | CsclError]:
    """Each row → its Envelope (protocol + request bodies), or the error of a broken envelope."""
    out: list[Envelope | CsclError] = []
    for row in rows:
        try:
            out.append(open_envelope(request_body(row), policy))
        except CsclError as exc:
            out.append(exc)
    return out


def requests_of(envelope: Envelope | CsclError, policy: RequestPolicy) -> list[Request | CsclError]:
    """An envelope's request bodies → Requests, or the CsclError that says what is wrong."""
    if isinstance(envelope, CsclError):
        return [envelope]
    out: list[Request | CsclError] = []
    for item in envelope.items:
        try:
            out.append(parse_request(item, policy))
        except CsclError as exc:
            out.append(exc)
    return out


def parse_rows(rows: list, policy: RequestPolicy) -> list[Request | CsclError]:
    """Every request of every row, in order (a broken envelope counts as one failed request)."""
    return [r for env in open_rows(rows, policy) for r in requests_of(env, policy)]


class CsclHandler(BaseHandler):
    """initialize → parse rows → Predictor.run (batched) → statuses, bodies and log records."""

    def initialize(self, context) -> None:
        props = context.system_properties
        gpu = props.get("gpu_id")
        cuda = torch.cuda.is_available() and gpu is not None
        self.device = str(pick_device(f"cuda:{gpu}" if cuda else "cpu"))
        self.settings = Settings.load(getattr(context, "model_yaml_config", None))
        storage.configure_store(self.settings.endpoint_url)  # once, for this worker process
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
            log_store = None  # the process store, unless logs have their own endpoint
            if self.settings.log_endpoint_url:
                log_store = storage.Store(self.settings.log_endpoint_url)
            self.inference_logger = InferenceLogger(self.settings.log_uri, store=log_store)
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
            policy = self.settings.policy
            envelopes = open_rows(data, policy)
            per_row = [requests_of(e, policy) for e in envelopes]
            results = iter(self.predictor.run([r for reqs in per_row for r in reqs], policy=policy))
            n = sum(len(reqs) for reqs in per_row)
            out = [self.respond_row(idx, env, [next(results) for _ in reqs], n)
                   for idx, (env, reqs) in enumerate(zip(envelopes, per_row, strict=True))]  # fmt: skip
        except Exception as exc:  # a bug: answer 500 with the reason, never the generic 503
            logger.exception("cscl handler failed for the whole batch")
            raise PredictionException(f"internal error: {type(exc).__name__}: {exc}", 500) from exc
        if context.metrics is not None:
            context.metrics.add_time("HandlerTime", round((time.perf_counter() - t0) * 1000, 2))
        return out

    def respond_row(self, idx: int, envelope: Envelope | CsclError, results: list[Result],
                    batch: int) -> dict:  # fmt: skip
        """One HTTP answer: the envelope's answers, or the first error (its status and body).

        KServe's v1 and v2 protocols have no per-instance status, so a body of several requests
        fails as a whole when one of them does; the error body names which (`index`).
        """
        rid = self.context.get_request_id(idx) if self.context is not None else None
        errors = [(i, r.error) for i, r in enumerate(results) if r.error is not None]
        if errors:
            i, err = errors[0]
            code, body = error_body(err)
            if code >= 500:
                logger.error("request %s failed: %s", rid, err)
            if isinstance(envelope, Envelope) and envelope.protocol != "torchserve":
                body["error"] = body["message"]  # KServe's error body is {"error": "..."}
                if len(envelope.items) > 1:
                    body["index"] = i
            self.context.set_response_status(code, HTTPStatus(code).phrase, idx)
            return body
        answers = []
        for res in results:
            answer, req = res.answer, res.request
            answer["request_id"] = rid
            answer["input"] = req.source
            answer["batch_size"] = batch  # how many requests TorchServe batched with it
            if self.inference_logger is not None:
                rec = make_record(answer, rid, uri=req.uri, source=req.source)
                self.inference_logger.log(rec)  # never blocks, never raises on store errors
            answers.append(answer)
        name = getattr(self.context, "model_name", None) or self.predictor.bundle.name
        return close_envelope(envelope, answers, model_name=name,
                              model_version=self.predictor.model_version, request_id=rid)  # fmt: skip


_service = CsclHandler()


def handle(data, context):
    """Function entry point (`--handler handler.py:handle`): the module holds several classes,
    and TorchServe's class discovery wants exactly one. Called with data=None to initialise."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
