"""H&E → IHC slide registration and location pairing of patches.

Matrices map H&E level-0 (x, y) to IHC level-0 (x, y) (docs/CONTRACTS.md, `m00..m12`).
"""

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

__all__ = [
    "MATRIX_COLUMNS",
    "REGISTRATION_COLUMNS",
    "apply_affine",
    "compose_affine",
    "invert_affine",
    "load_registrations",
    "matrix_of",
    "pair_by_location",
    "write_registrations",
]
