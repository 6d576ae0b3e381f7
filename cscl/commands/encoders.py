"""`cscl encoders`: the named patch encoders — architecture, output dim, input, normalisation,
pooling and where each spec comes from (`--json` for machines)."""

from __future__ import annotations

import argparse
import json

HELP = "list the named patch encoders (architecture, dim, input size, mean/std, pooling)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per encoder")


def describe(name: str) -> dict:
    """One encoder's row; its output dim from the architecture built on the meta device."""
    import timm
    import torch

    from cscl.errors import InputError
    from cscl.wsi.encoders import CLS_MEAN, encoder_spec

    try:
        spec = encoder_spec(name)
    except InputError as exc:  # registered but refused (no faithful build here)
        return {"name": name, "refused": exc.message, "hint": exc.hint}
    with torch.device("meta"):
        model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.timm_kwargs())
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    cfg = model.pretrained_cfg or {}
    return {
        "name": name,
        "arch": spec.arch,
        "dim": dim * 2 if spec.pool == CLS_MEAN else dim,
        "input_size": spec.input_size or int(cfg.get("input_size", (3, 224, 224))[-1]),
        "mean": list(spec.mean or cfg.get("mean", ())),
        "std": list(spec.std or cfg.get("std", ())),
        "pool": spec.pool or "default",
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "source": spec.source,
    }


def run(args: argparse.Namespace) -> int:
    from cscl.wsi.encoders import list_encoders

    rows = [describe(n) for n in list_encoders()]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    head = f"{'name':<19}{'arch':<31}{'dim':>5} {'input':>5}  {'pool':<9}{'mean / std':<44}"
    print(head)
    for r in rows:
        if "refused" in r:
            print(f"{r['name']:<19}refused: {r['refused']}")
            continue
        ms = "/".join(f"{v:.3g}" for v in r["mean"]) + "  " + "/".join(f"{v:.3g}" for v in r["std"])
        print(
            f"{r['name']:<19}{r['arch']:<31}{r['dim']:>5} {r['input_size']:>5}  "
            f"{r['pool']:<9}{ms:<44}"
        )
    print("\nalso: timm:<model>[?k=v&…] (any timm model with create_model kwargs), or a timm name")
    return 0
