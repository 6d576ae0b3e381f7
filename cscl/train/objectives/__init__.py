"""The registered training objectives, one module each (stage-1 adapter, cscl, madeleine,
histostainalign, supervised). Every module of this package is imported here, so a new objective
is ONE new file with a `@register_objective("name")` class — nothing else to edit."""

import sys

from cscl.plugins import import_plugins

UNAVAILABLE = import_plugins(sys.modules[__name__])
