"""`cscl predict`: one slide or feature file → the Inference API answer (JSON on stdout)."""

from __future__ import annotations

import argparse

HELP = "predict one slide / feature file via a served model (--url) or a bundle (--bundle)"

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE predict`).
CONFIG = {"model": "model_name"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--slide", help="local slide file (the server must allow its folder)")
    src.add_argument("--slide-uri", help="slide URI the server can read (s3://…)")
    src.add_argument("--features", help="local feature file (.h5), uploaded")
    src.add_argument("--features-uri", help="feature file URI the server can read (s3://…)")
    p.add_argument("--url", help="server URL, e.g. http://127.0.0.1:8080 (env CSCL_SERVING_URL)")
    p.add_argument("--model", default="cscl", help="served model name")
    p.add_argument("--key-file", help="TorchServe key_file.json (env CSCL_KEY_FILE)")
    p.add_argument("--bundle", help="predict in-process with this bundle dir instead of a server")
    p.add_argument("--mpp", type=float, help="slide level-0 µm/px if the file lacks it")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait")
    p.add_argument("--retries", type=int, default=5, help="retries on connection errors/503")
    p.add_argument("--out", help="also write the JSON answer to this file")
    p.add_argument("--compact", action="store_true", help="one-line JSON")


def _in_process(args) -> dict:
    import tempfile
    from pathlib import Path

    from cscl.features import read_features
    from cscl.inference import Predictor
    from cscl.io import storage

    pred = Predictor(args.bundle)
    uri = args.features or args.features_uri
    if uri is None:
        return pred.predict_slide(args.slide or args.slide_uri, args.mpp)
    with tempfile.TemporaryDirectory(prefix="cscl-predict-") as d:
        local = storage.download(uri, Path(d) / "f.h5") if storage.is_s3(uri) else uri
        return pred.predict_features(read_features(storage.local_path(local)))


def _served(args) -> dict:
    import os

    from cscl.errors import InputError
    from cscl_platform.serving.client import ServingClient

    url = args.url or os.environ.get("CSCL_SERVING_URL")
    if not url:
        raise InputError("no server: pass --url (printed by `cscl serve`) or --bundle DIR")
    client = ServingClient(
        url,
        args.model,
        key_file=args.key_file or os.environ.get("CSCL_KEY_FILE"),
        timeout=args.timeout,
        retries=args.retries,
    )
    if args.features:
        return client.predict_features_file(args.features)
    if args.features_uri:
        return client.predict_features_uri(args.features_uri)
    if args.slide:
        return client.predict_slide_uri(os.path.abspath(args.slide), args.mpp)
    return client.predict_slide_uri(args.slide_uri, args.mpp)


def run(args: argparse.Namespace) -> int:
    import json

    answer = _in_process(args) if args.bundle else _served(args)
    text = json.dumps(answer, indent=None if args.compact else 2)
    if args.out:
        from pathlib import Path

        from cscl.io.storage import atomic_path

        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    return 0
