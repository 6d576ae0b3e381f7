"""`load_encoder`: a named encoder (or any timm model) → a frozen `Encoder` on a device.

Random init is allowed only when asked for (tests, benchmarks) and is seeded so features — and
so the extractor hash, which holds the name and the weights digest — reproduce.
"""

from __future__ import annotations

import os

import timm
import torch
from timm.data import resolve_model_data_config

from cscl.errors import InputError
from cscl.runtime import pick_device, sha256_file
from cscl.wsi.encoders.base import CLS_MEAN, Encoder, EncoderSpec, TokenPool
from cscl.wsi.encoders.registry import encoder_spec
from cscl.wsi.encoders.weights import load_state_dict, weights_path


def build_model(name: str, spec: EncoderSpec, seed: int) -> torch.nn.Module:
    """The timm architecture of `spec` without a classifier, seeded random weights."""
    kwargs = spec.timm_kwargs()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init is reproducible → same features, same hash
            return timm.create_model(spec.arch, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, TypeError, AssertionError, ValueError) as exc:
        raise InputError(
            f"cannot build encoder {name!r} (timm {spec.arch!r}): {exc}",
            hint="check the encoder's spec in cscl/wsi/encoders/",
        ) from exc


def load_weights(model: torch.nn.Module, name: str, spec: EncoderSpec, weights) -> str:
    """Load a weights file into `model` (keys remapped by the spec) → the file's sha256."""
    path = weights_path(weights)
    sd = load_state_dict(path)
    if spec.remap is not None:
        sd = spec.remap(sd)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        first = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:2]
        raise InputError(
            f"weights {weights} do not fit backbone {name!r}: {'; '.join(first) or exc}",
            hint="check --backbone matches the weights",
        ) from exc
    unexpected = [k for k in unexpected if not k.startswith(spec.ignore_prefixes)]
    if missing or unexpected:
        raise InputError(
            f"weights {weights} do not fit backbone {name!r}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            hint="check --backbone matches the weights",
        )
    return sha256_file(path)


def load_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    allow_random: bool = False,
    device: str | torch.device | None = None,
    *,
    seed: int = 0,
    spec: EncoderSpec | dict | str | None = None,
) -> Encoder:
    """Encoder `name` (registered, `timm:…`, or any timm model) with weights from a file/s3, or
    random. `spec` overrides the architecture (an `EncoderSpec`, or the `identity()` recorded in a
    feature file/bundle, applied with the registered encoder's key remap): serving rebuilds the
    encoder the features were extracted with, not whatever the registry says today."""
    if weights is None and not allow_random:
        raise InputError(
            f"no weights given for backbone {name!r}",
            hint="pass --weights PATH|s3://… (a state dict), or --random-init for a random backbone",
        )
    if spec is None:
        spec = encoder_spec(name)
    elif not isinstance(spec, EncoderSpec):
        spec = encoder_spec(name).with_identity(spec)
    model = build_model(name, spec, seed)
    if weights is not None:
        digest, random_init = load_weights(model, name, spec, weights), False
    else:
        digest, random_init = f"random-seed{seed}", True
    cfg = resolve_model_data_config(model)
    fixed = bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False))
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # a ViT's own size
    fixed_size = int(built[-1]) if fixed and built else int(cfg["input_size"][-1])
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    if spec.pool == CLS_MEAN:
        model = TokenPool(model)
        dim = model.num_features
    dev = pick_device(device)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    input_size = spec.input_size or (fixed_size if fixed else None)
    return Encoder(
        name=name,
        model=model,
        dim=dim,
        mean=tuple(float(v) for v in (spec.mean or cfg["mean"])),
        std=tuple(float(v) for v in (spec.std or cfg["std"])),
        input_size=input_size,
        weights_digest=digest,
        random_init=random_init,
        device=dev,
        spec=spec,
    )
