"""Model card (Markdown) from a bundle's bundle.json: what a reviewer reads before promotion."""

from __future__ import annotations

import json
from pathlib import Path


def model_card(bundle_dir: str | Path, flat_metrics: dict[str, float], model_uri: str) -> str:
    """A short Markdown card: identity, data, preprocessing, tasks, headline metrics, limits."""
    doc = json.loads((Path(bundle_dir) / "bundle.json").read_text())
    pre, bb = doc.get("preprocessing", {}), doc.get("backbone", {})
    lines = [
        f"# Model card: {doc.get('name')} {doc.get('version')}",
        "",
        f"- Stored at: `{model_uri}`",
        f"- Created: {doc.get('created')}, git commit `{doc.get('git_commit')}`",
        f"- Slide encoder: {doc.get('model', {}).get('kind')} "
        f"(run {doc.get('model', {}).get('run_model_version')})",
        f"- Patch backbone: `{bb.get('name')}`"
        + (" (random init: for tests/demos only)" if bb.get("random_init") else ""),
        f"- Preprocessing: {pre.get('target_mpp')} µm/px, {pre.get('patch_size')} px patches, "
        f"extractor `{pre.get('extractor_hash')}`",
        f"- Training data fingerprint: `{doc.get('training_fingerprint')}`",
        "",
        "## Tasks",
        "",
    ]
    for task, vocab in (doc.get("tasks") or {}).items():
        lines.append(f"- **{task}**: {vocab}")
    if not doc.get("tasks"):
        lines.append("- none (embedding only)")
    lines += [
        "",
        "## Evaluation (k-fold, bootstrap 95 % CI)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k, v in sorted(flat_metrics.items()):
        if ".kfold_auc" in k or ".cindex" in k or k == "quality_score":
            lines.append(f"| {k} | {v:.3f} |")
    lines += [
        "",
        "## Intended use and limits",
        "",
        "Research use on H&E whole-slide images scanned like the training cohort (mpp, stain). "
        "Not a medical device. Predictions outside the training distribution are flagged by "
        "drift monitoring (reference set stored with the bundle).",
        "",
    ]
    return "\n".join(lines)
