"""The serving step of `make demo` (called by cscl_platform.demo as `demo_step(ctx)`).

Takes the `.mar` the training pipeline released to `<prefix>/models/<name>/<version>/`, starts a
real TorchServe on loopback (token auth on, slide URIs allowed only under the demo cohort), sends
one H&E slide by its s3:// URI exactly as a client application would, prints the answer, and
stops the server. The request's inference log record lands in `<prefix>/inference-logs/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cscl.io import storage
from cscl_platform.serving.client import ServingClient
from cscl_platform.serving.server import start_torchserve


def summarize_answer(answer: dict) -> dict:
    """The parts of a prediction a person reads first (the full embedding is long)."""
    emb = answer.get("embedding") or []
    out = {
        "model_version": answer.get("model_version"),
        "embedding": f"{len(emb)} floats, first {[round(float(v), 3) for v in emb[:4]]}",
        "predictions": answer.get("predictions"),
        "top_patches": (answer.get("top_patches") or [])[:3],
        "qc": answer.get("qc"),
    }
    if answer.get("triage"):  # the IHC pre-screen, when the model was packaged with one
        out["triage"] = {
            task: f"{t['decision']} (P {t['probability_positive']:.2f}, threshold "
            f"{t['threshold']:.2f} for {100 * t['target_sensitivity']:.0f} % sensitivity)"
            for task, t in answer["triage"].items()
        }
    return out


def demo_step(ctx: Any) -> dict | None:
    """Serve the released model and print one prediction for an H&E slide of the cohort."""
    if not ctx.model_uri:
        print("   serving: no model was released (quality gate said no); skipped")
        return None
    if ctx.endpoint_url:  # the demo's store (run_demo passes it to every step)
        storage.configure_store(ctx.endpoint_url)
    store = Path(ctx.out_dir) / "serving" / "model-store"
    mar = storage.download(ctx.model_uri.rstrip("/") + "/model.mar", store / "cscl.mar")
    manifest = pd.read_csv(Path(ctx.cohort_dir) / "manifest.csv")
    he_rel = manifest.loc[manifest["stain"] == "HE", "slide_uri"].iloc[0]
    slide_uri = storage.resolve_relative(he_rel, ctx.manifest_uri)
    cohort_prefix = ctx.manifest_uri.rsplit("/", 1)[0] + "/"
    env = {
        "CSCL_ALLOWED_PREFIXES": cohort_prefix,
        "CSCL_INFERENCE_LOG_URI": ctx.project_prefix,
        "CSCL_S3_ENDPOINT": ctx.endpoint_url or "",
    }
    print(f"   starting TorchServe with {mar} (loopback, token auth on)…", flush=True)
    with start_torchserve(
        store, {"cscl": mar.name}, workdir=Path(ctx.out_dir) / "serving" / "run", env=env
    ) as inst:
        client = ServingClient(inst.inference_url, "cscl", key_file=inst.key_file)
        answer = client.predict_slide_uri(slide_uri)
        print(f"   POST {inst.inference_url}/predictions/cscl {{'slide_uri': '{slide_uri}'}} →")
        print(json.dumps(summarize_answer(answer), indent=2, default=str))
    return answer
