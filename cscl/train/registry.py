"""timm-style objective registry: `@register_objective(name)`, `create_objective`, `list_objectives`.

Adding an objective = one new file in `cscl/train/objectives/` holding a decorated `Objective`
subclass (that package imports every module in it), nothing else. Every entry point (`cscl
pretrain`, the pretrain components, `cscl.train.pretrain`) then accepts its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any

from cscl.errors import InputError
from cscl.train.fit import FitConfig
from cscl.train.objective import Objective, TrainInputs

_OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator: register an `Objective` subclass under `name`."""

    def deco(cls: type[Objective]) -> type[Objective]:
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} registered twice")
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"@register_objective({name!r}) needs an Objective subclass")
        cls.name = name
        _OBJECTIVES[name] = cls
        return cls

    return deco


def list_objectives(stage: str | None = None) -> list[str]:
    """Registered names, optionally only those of one `stage` ("adapter" or "slide")."""
    return sorted(n for n, c in _OBJECTIVES.items() if stage is None or c.stage == stage)


def objective_class(name: str) -> type[Objective]:
    if name not in _OBJECTIVES:
        raise InputError(f"unknown objective {name!r}", hint=f"one of {list_objectives()}")
    return _OBJECTIVES[name]


def objective_config(
    name: str, config: FitConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> FitConfig:
    """The objective's frozen config: a given `Config` instance as is, else `Config()` with the
    objective's DEFAULTS; then `overrides` (and a Mapping `config`) applied, None values skipped."""
    cls = objective_class(name)
    if is_dataclass(config) and not isinstance(config, type):
        if not isinstance(config, cls.Config):
            raise InputError(
                f"objective {name!r} takes a {cls.Config.__name__}, not {type(config).__name__}"
            )
        cfg = config
    elif config is None or isinstance(config, Mapping):
        cfg = replace(cls.Config(), **cls.DEFAULTS)
        overrides = {**dict(config or {}), **overrides}
    else:
        raise InputError(f"config for objective {name!r} must be a dataclass or a mapping")
    names = {f.name for f in fields(cfg)}
    kv = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(kv) - names)
    if unknown:
        raise InputError(
            f"objective {name!r} has no setting(s) {unknown}",
            hint=f"{cls.Config.__name__} fields: {sorted(names)}",
        )
    if "objective" in names:
        kv["objective"] = name
    return replace(cfg, **kv)


def create_objective(
    name: str,
    inputs: TrainInputs,
    config: FitConfig | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Objective:
    """Build a registered objective (ready for `fit`) from its name, inputs and config."""
    return objective_class(name)(objective_config(name, config, **overrides), inputs)
