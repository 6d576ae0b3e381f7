"""The registered training objectives, one module each (stage-1 adapter, cscl, madeleine,
histostainalign, supervised). Every module of this package is imported here, so a new objective
is ONE new file with a `@register_objective("name")` class — nothing else to edit."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
