"""TorchServe artefacts of a model bundle: the .mar archive, the in-pod config.properties, and
the release layout KServe reads from the object store.

Why here and not in `cscl.bundle`: the bundle is the server-agnostic model format; everything
that knows TorchServe (its handler, archiver, config keys) lives in the platform layer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cscl.bundle import BUNDLE_FILE
from cscl.errors import InputError
from cscl.io import storage

HANDLER = Path(__file__).with_name("handler.py")
# TorchServe waits this long for more requests before running a batch. A lone request waits all
# of it, so it adds straight to latency at low load; under load the queue already holds the next
# requests, so batches form anyway. benchmarks/serve.py (docs/PERFORMANCE.md): p50 at c=1 rose
# with the delay (1 → 5 → 20 ms) while throughput at c=8 stayed flat, hence the smallest.
DEFAULT_MAX_BATCH_DELAY_MS = 1

MODEL_CONFIG_YAML = """# TorchServe per-model settings (written by cscl package)
minWorkers: {workers}
maxWorkers: {workers}
batchSize: {batch_size}
maxBatchDelay: {max_batch_delay}
responseTimeout: {response_timeout}
startupTimeout: 300
"""


def release_uri(prefix: str, name: str, version: str) -> str:
    """`<prefix>/<name>/<version>/` ('+' in the version becomes '_': awkward in keys and URLs)."""
    return f"{prefix.rstrip('/')}/{name}/{version.replace('+', '_')}/"


def build_mar(
    bundle_dir: str | Path,
    export_dir: str | Path,
    name: str,
    version: str,
    *,
    handler: str | Path = HANDLER,
    batch_size: int = 8,
    max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS,
    response_timeout: int = 900,
    workers: int = 1,
) -> Path:
    """`<export_dir>/<name>.mar` with torch-model-archiver: handler + every bundle file."""
    handler = Path(handler)
    if not handler.is_file():
        raise InputError(f"TorchServe handler not found: {handler}")
    bundle_dir, export_dir = Path(bundle_dir).resolve(), Path(export_dir).resolve()
    export_dir.mkdir(parents=True, exist_ok=True)
    extra = ",".join(str(p) for p in sorted(bundle_dir.iterdir()) if p.is_file())
    exe = Path(sys.executable).with_name("torch-model-archiver")
    with tempfile.TemporaryDirectory(prefix="cscl-mar-") as tmp:
        cfg = Path(tmp) / "model-config.yaml"
        cfg.write_text(
            MODEL_CONFIG_YAML.format(
                workers=workers,
                batch_size=batch_size,
                max_batch_delay=max_batch_delay,
                response_timeout=response_timeout,
            )
        )
        cmd = [str(exe) if exe.exists() else "torch-model-archiver", "--model-name", name,
               "--version", version, "--handler", f"{handler.with_suffix('')}:handle", "--extra-files", extra,
               "--config-file", str(cfg), "--export-path", tmp, "--force"]  # fmt: skip
        # the archiver stages files in $TMPDIR/<name>: a private TMPDIR avoids collisions
        env = {**os.environ, "TMPDIR": tmp}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise InputError(f"torch-model-archiver failed: {r.stderr.strip() or r.stdout}")
        out = export_dir / f"{name}.mar"
        with storage.atomic_path(out) as part:
            shutil.copyfile(Path(tmp) / f"{name}.mar", part)
    return out


def cluster_config(name: str, mar: str, version: str = "1.0", *, batch_size: int = 8,
                   max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS,
                   response_timeout: int = 900, workers: int = 1) -> str:  # fmt: skip
    """config.properties for TorchServe in a pod (KServe `storageUri` layout or the Deployment).

    Differs from serving/config.properties (local, loopback) in three ways: inference (8080) and
    metrics (8082) listen on the pod address; the model is registered through `model_snapshot`,
    as KServe's TorchServe runtime expects; and token authorization is off, because TorchServe
    0.12 generates its keys inside the container where no client can read them — access is
    decided by the NetworkPolicy of manifests/base/serving and the ingress instead. The
    management API stays on 127.0.0.1 with the model API disabled; env-var config stays off so
    the runtime's TS_* variables cannot change any of this.
    """
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            name: {
                version: {
                    "defaultVersion": True,
                    "marName": mar,
                    "minWorkers": workers,
                    "maxWorkers": workers,
                    "batchSize": batch_size,
                    "maxBatchDelay": max_batch_delay,
                    "responseTimeout": response_timeout,
                }
            }
        },
    }
    return "\n".join(
        [
            "# written by cscl package: TorchServe inside a pod (see serving/config.properties)",
            "inference_address=http://0.0.0.0:8080",
            "management_address=http://127.0.0.1:8081",
            "metrics_address=http://0.0.0.0:8082",
            "grpc_inference_address=127.0.0.1",
            "grpc_management_address=127.0.0.1",
            "grpc_inference_port=7070",
            "grpc_management_port=7071",
            "enable_metrics_api=true",
            "metrics_mode=prometheus",
            "enable_model_api=false",
            "disable_token_authorization=true",
            "enable_envvars_config=false",
            "install_py_dep_per_model=false",
            "ts_open_inference_protocol=true",  # GET /v2/health/ready|live (KServe v2)
            "model_store=/mnt/models/model-store",
            "allowed_urls=file:///mnt/models/model-store/.*",
            f"default_response_timeout={response_timeout}",
            "max_request_size=268435456",
            "max_response_size=16777216",
            "job_queue_size=256",
            f"model_snapshot={json.dumps(snapshot, separators=(',', ':'))}",
            "",
        ]
    )


def upload_release(
    bundle_dir: str | Path, mar: str | Path | None, prefix: str, name: str, version: str
) -> str:
    """Upload `<prefix>/<name>/<version>/{model.mar, bundle/…, metrics.json, serving/…}`.

    `serving/` is the layout KServe's TorchServe runtime reads from `storageUri`
    (config/config.properties + model-store/<name>.mar); the plain Deployment uses it too.
    The bundle goes last-but-one and the KServe config last, so a reader that sees the config
    finds everything it points to. Returns the release URI (ends with '/').
    """
    bundle_dir = Path(bundle_dir)
    dest = release_uri(prefix, name, version)
    meta = json.loads((bundle_dir / BUNDLE_FILE).read_text())
    for f in sorted(bundle_dir.iterdir()):
        if f.is_file() and f.name != BUNDLE_FILE:
            storage.upload(f, f"{dest}bundle/{f.name}")
    storage.upload(bundle_dir / BUNDLE_FILE, f"{dest}bundle/{BUNDLE_FILE}")
    if meta.get("metrics"):
        storage.write_bytes(f"{dest}metrics.json", json.dumps(meta["metrics"], indent=2).encode())
    if mar is not None:
        storage.upload(Path(mar), f"{dest}model.mar")
        storage.upload(Path(mar), f"{dest}serving/model-store/{name}.mar")
        storage.write_bytes(
            f"{dest}serving/config/config.properties",
            cluster_config(name, f"{name}.mar", version).encode(),
        )
    return dest
