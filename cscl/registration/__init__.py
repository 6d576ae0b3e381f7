"""H&E → IHC slide registration and location pairing of patches.

Matrices map H&E level-0 (x, y) to IHC level-0 (x, y) (docs/CONTRACTS.md, `m00..m12`):
`register_pair` / `register_manifest` estimate them (plus an optional non-rigid
displacement field: `Transform`, `transform_of(row)`), `load_registrations` reads them back (or the
true synthetic `transforms.csv`), `pair_by_location` uses them to pair patches.
"""

from cscl.registration.batch import RegisterParams, register_manifest, summarize
from cscl.registration.io import (
    MATRIX_COLUMNS,
    REGISTRATION_COLUMNS,
    apply_affine,
    compose_affine,
    invert_affine,
    load_registrations,
    matrix_of,
    write_registrations,
)
from cscl.registration.pairing import pair_by_location
from cscl.registration.register import Registration, register_pair
from cscl.registration.transform import DisplacementField, Transform, transform_of

__all__ = [
    "DisplacementField",
    "Transform",
    "transform_of",
    "MATRIX_COLUMNS",
    "REGISTRATION_COLUMNS",
    "RegisterParams",
    "Registration",
    "apply_affine",
    "compose_affine",
    "invert_affine",
    "load_registrations",
    "matrix_of",
    "pair_by_location",
    "register_manifest",
    "register_pair",
    "summarize",
    "write_registrations",
]
