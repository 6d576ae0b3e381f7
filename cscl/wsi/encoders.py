"""Patch encoders: any timm backbone, weights from a local file or s3:// — never from a hub.

Pathology foundation models (CONCH, UNI, …) are gated and cannot be fetched at run time, so the
weights file is an explicit input; its sha256 enters the extractor hash. Random init is allowed
only when asked for (tests, benchmarks) and is seeded so features reproduce.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cscl.errors import InputError, StorageError
from cscl.io import storage

_HEAD_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")


@dataclass
class Encoder:
    """A frozen backbone in eval mode plus the preprocessing of its pretrained config."""

    name: str
    model: torch.nn.Module = field(repr=False)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None  # fixed model input side, or None when any size works
    weights_digest: str  # sha256 of the weights file, or "random-seed<N>"
    random_init: bool
    device: torch.device
    transform: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, default=None)

    def __post_init__(self) -> None:
        if self.transform is None:
            self.transform = self.prepare

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device → normalised float on the encoder's device.

        Only normalisation (and a resize when the model needs a fixed size): patches are already
        at the target resolution, so the centre crop of timm's eval transform would drop tissue.
        """
        x = batch.to(self.device, non_blocking=True).float().div_(255.0)
        if self.input_size and x.shape[-1] != self.input_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True
            )
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Features (B, dim) float32 of a uint8 batch; bf16 autocast on CUDA."""
        x = self.prepare(batch)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = self.model(x)
        else:
            y = self.model(x)
        return y.float()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _weights_path(weights: str, endpoint_url: str | None) -> Path:
    if storage.is_s3(weights):
        from cscl.wsi.reader import cache_dir

        dest = (
            cache_dir().parent
            / "weights"
            / hashlib.sha256(weights.encode()).hexdigest()[:16]
            / weights.rsplit("/", 1)[-1]
        )
        info = storage.stat(weights, endpoint_url)
        if dest.exists() and dest.stat().st_size == info.size:
            return dest
        return storage.download(weights, dest, endpoint_url)
    p = storage.local_path(weights)
    if not p.is_file():
        raise InputError(f"weights file not found: {p}", hint="check --weights")
    return p


def load_state_dict(path: Path) -> dict:
    """A state dict from .safetensors or a torch checkpoint (weights_only; nested keys unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"cannot load weights {path}: {exc}",
            hint="give a state dict (.pth/.pt/.bin saved with torch.save, or .safetensors)",
        ) from exc
    for key in ("state_dict", "model", "model_state_dict", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"weights {path} hold a {type(sd).__name__}, not a state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but no CUDA GPU is visible",
            hint="drop --device to use the CPU",
        )
    return dev


def load_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    allow_random: bool = False,
    device: str | torch.device | None = None,
    *,
    seed: int = 0,
    endpoint_url: str | None = None,
) -> Encoder:
    """Build timm backbone `name` (no classifier) with weights from a file/s3, or seeded random."""
    import timm
    from timm.data import resolve_model_data_config

    if weights is None and not allow_random:
        raise InputError(
            f"no weights given for backbone {name!r}",
            hint="pass --weights PATH|s3://… (a state dict), or --random-init for a random backbone",
        )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init is reproducible → same features, same hash
            model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        raise InputError(
            f"unknown timm backbone {name!r}: {exc}", hint="see timm.list_models()"
        ) from exc
    if weights is not None:
        try:
            path = _weights_path(str(weights), endpoint_url)
        except StorageError as exc:
            raise InputError(
                f"cannot fetch weights {weights}: {exc.message}", hint=exc.hint
            ) from exc
        sd = load_state_dict(path)
        try:
            missing, unexpected = model.load_state_dict(sd, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when not strict
            first = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:2]
            raise InputError(
                f"weights {weights} do not fit backbone {name!r}: {'; '.join(first) or exc}",
                hint="check --backbone matches the weights",
            ) from exc
        unexpected = [k for k in unexpected if not k.startswith(_HEAD_PREFIXES)]
        if missing or unexpected:
            raise InputError(
                f"weights {weights} do not fit backbone {name!r}: "
                f"{len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
                hint="check --backbone matches the weights",
            )
        digest, random_init = sha256_file(path), False
    else:
        digest, random_init = f"random-seed{seed}", True
    cfg = resolve_model_data_config(model)
    dev = _pick_device(device)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fixed = bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False))
    return Encoder(
        name=name,
        model=model,
        dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=int(cfg["input_size"][-1]) if fixed else None,
        weights_digest=digest,
        random_init=random_init,
        device=dev,
    )
