"""Named patch encoders (timm's model registry is the model): one decorated function each.

    @register_encoder("resnet18")
    def resnet18() -> EncoderSpec:
        return EncoderSpec(arch="resnet18", mean=IMAGENET_MEAN, std=IMAGENET_STD)

Other names:
- `timm:<model>[?k=v&…]` is any timm model with create_model kwargs (`pool=`, `input_size=`,
  `mean=a,b,c`, `std=a,b,c` set the spec's own fields), e.g.
  `timm:vit_small_patch16_224?img_size=112&pool=avg`.
- a bare timm model name still works (timm's pretrained config gives its normalisation):
  `--backbone` has always accepted any timm name.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

import timm

from cscl.errors import InputError
from cscl.wsi.encoders.base import EncoderSpec

_ENCODERS: dict[str, Callable[[], EncoderSpec]] = {}
TIMM_PREFIX = "timm:"


def register_encoder(name: str) -> Callable[[Callable[[], EncoderSpec]], Callable[[], EncoderSpec]]:
    """Function decorator: the function returns the `EncoderSpec` of encoder `name`."""

    def deco(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
        if name in _ENCODERS and _ENCODERS[name] is not fn:
            raise ValueError(f"encoder {name!r} is registered twice")
        _ENCODERS[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    """Registered encoder names (any timm model name is accepted as well)."""
    return sorted(_ENCODERS)


def _value(v: str):
    """A query-string value as bool/int/float when it reads as one, else the string."""
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _triple(name: str, key: str, v: str) -> tuple[float, float, float]:
    parts = [float(p) for p in v.split(",")]
    if len(parts) != 3:
        raise InputError(f"{name}: {key} needs 3 comma-separated numbers, got {v!r}")
    return (parts[0], parts[1], parts[2])


def timm_spec(name: str) -> EncoderSpec:
    """`timm:<model>[?k=v&…]` → its spec (the kwargs go to timm.create_model)."""
    arch, _, query = name.removeprefix(TIMM_PREFIX).partition("?")
    if not timm.is_model(arch):
        raise InputError(f"unknown timm model {arch!r} in {name!r}", hint="see timm.list_models()")
    kwargs, own = {}, {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if k in ("mean", "std"):
            own[k] = _triple(name, k, v)
        elif k == "pool":
            own[k] = v
        elif k == "input_size":
            own[k] = int(v)
        else:
            kwargs[k] = _value(v)
    return EncoderSpec(arch=arch, kwargs=kwargs, source="timm", **own)


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder, `timm:<model>?…`, else a plain timm architecture."""
    if name in _ENCODERS:
        return _ENCODERS[name]()
    if name.startswith(TIMM_PREFIX):
        try:
            return timm_spec(name)
        except ValueError as exc:  # malformed query string
            raise InputError(f"cannot read encoder {name!r}: {exc}") from exc
    if timm.is_model(name):
        return EncoderSpec(arch=name, source="timm", hash_spec=False)
    raise InputError(
        f"unknown timm backbone {name!r} (and no registered encoder of that name: "
        f"{', '.join(list_encoders()) or 'none'})",
        hint="see `cscl encoders`, use timm:<model>[?k=v], or register an encoder in "
        "cscl/wsi/encoders/",
    )


def encoder_identity(name: str, recorded: dict | str | None = None) -> dict | None:
    """The spec identity that enters the extractor hash (`recorded` replaces the registry's), or
    None for the encoders whose name alone identified them before specs were recorded (resnet18,
    resnet50, bare timm names) — so their existing feature files keep their hash."""
    spec = encoder_spec(name)
    if recorded:
        spec = spec.with_identity(recorded)
    return spec.identity() if spec.hash_spec else None
