"""`cscl serve`: run TorchServe locally on loopback with cscl's secure configuration."""

from __future__ import annotations

import argparse

HELP = "serve packaged models with a local TorchServe (loopback, token auth) until Ctrl-C"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-store", required=True, help="folder with .mar files (cscl package)")
    p.add_argument(
        "--models",
        action="append",
        metavar="NAME=FILE.mar",
        help="model to load (repeatable; default: every .mar in the store)",
    )
    p.add_argument("--port", type=int, default=0, help="inference port (default 0: a free one)")
    p.add_argument(
        "--allow",
        action="append",
        metavar="PREFIX",
        help="s3:// or local prefix that slide_uri/features_uri may point into (repeatable)",
    )
    p.add_argument("--log-uri", help="inference-log prefix (s3://bucket/prefix or a folder)")
    p.add_argument("--workdir", help="TorchServe working dir (logs/, key_file.json); default: temp")
    p.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--max-upload-mb", type=int, default=128, help="largest feature upload in MB")
    p.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for workers")


def _models(specs: list[str] | None) -> dict[str, str] | None:
    from cscl.errors import InputError

    if not specs:
        return None
    out = {}
    for s in specs:
        name, sep, mar = s.partition("=")
        if not sep or not name or not mar.endswith(".mar"):
            raise InputError(f"--models {s!r}: write NAME=FILE.mar, e.g. cscl=cscl.mar")
        out[name] = mar
    return out


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import time

    from cscl_platform.serving.server import start_torchserve

    env = {"CSCL_MAX_UPLOAD_BYTES": str(args.max_upload_mb * 1024 * 1024)}
    if args.allow:
        env["CSCL_ALLOWED_PREFIXES"] = ",".join(
            a if a.startswith("s3://") else os.path.abspath(a) for a in args.allow
        )
    if args.log_uri:  # a local folder made absolute: workers run in the model's own directory
        env["CSCL_INFERENCE_LOG_URI"] = (
            args.log_uri if "://" in args.log_uri else os.path.abspath(args.log_uri)
        )
    if args.store_endpoint:  # cscl's global --s3-endpoint, passed on to the workers
        env["CSCL_S3_ENDPOINT"] = args.store_endpoint
    models = _models(args.models)
    print("starting TorchServe (workers load the model; this takes a while on CPU)…", flush=True)
    inst = start_torchserve(
        args.model_store,
        models,
        workdir=args.workdir,
        port=args.port,
        workers=args.workers,
        env=env,
        ready_timeout=args.ready_timeout,
    )
    first = next(iter(models)) if models else "cscl"
    print(f"inference   {inst.inference_url}/predictions/<model>", flush=True)
    print(f"management  {inst.management_url}   (read-only: model API disabled)")
    print(f"metrics     {inst.metrics_url}/metrics   (Prometheus)")
    print(f"key file    {inst.key_file}   (send: Authorization: Bearer <inference key>)")
    print(f"logs        {inst.log_dir}")
    print(f"allowed URI prefixes: {env.get('CSCL_ALLOWED_PREFIXES', 'none (uploads only)')}")
    print(f"inference log: {env.get('CSCL_INFERENCE_LOG_URI', 'off (give --log-uri to monitor)')}")
    print(
        f"try: cscl predict --url {inst.inference_url} --model {first} "
        f"--key-file {inst.key_file} --features FILE.h5"
    )
    print("Ctrl-C stops the server.", flush=True)
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started with SIGINT ignored (background job)
    try:
        while not stop["now"] and inst.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping TorchServe…", flush=True)
        inst.stop()
    return 0 if stop["now"] or not inst.alive() else 1
