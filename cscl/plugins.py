"""Find the plug-ins of a package: every public module in it is imported once.

Why: a new slide reader, encoder or training objective is one file that registers itself with a decorator
(timm's model registry works the same way); nothing else has to list it. A module whose
optional library is missing is remembered with the reason instead of breaking the package.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_plugins(package: ModuleType, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Import `package`'s modules except `_private` ones and `skip` → {module: import error}."""
    unavailable: dict[str, str] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in skip:
            continue
        try:
            importlib.import_module(f"{package.__name__}.{info.name}")
        except ImportError as exc:
            unavailable[info.name] = str(exc)
    return unavailable
