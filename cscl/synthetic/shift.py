"""ShiftSpec: controlled distribution shift of a synthetic cohort, for drift monitoring.

Three independent knobs, each a strength (0 = none):
- `stain` (0..1): a lab's staining differs — every stain vector is tilted towards a fixed random
  direction and stain amounts are scaled (same direction for the whole cohort, like one lab).
- `scanner` (0..1): another scanner — Gaussian blur, more sensor noise, lower JPEG quality and a
  different pixel size (mpp × (1 + 0.4·s): the same tissue covers fewer pixels).
- `composition` (-1..1): other tissue — more (positive) or less (negative) tumour and the
  opposite for stroma cells.

The shift's own randomness comes from its own seed stream, so a shifted cohort with the same
seed has the same cases, labels, layouts and transforms; only the appearance changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from cscl.errors import InputError

PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "stain": {"stain": 0.6},
    "scanner": {"scanner": 0.6},
    "composition": {"composition": 0.6},
    "mild": {"stain": 0.25, "scanner": 0.25, "composition": 0.25},
    "strong": {"stain": 0.8, "scanner": 0.8, "composition": 0.8},
}
_RANGES = {"stain": (0.0, 1.0), "scanner": (0.0, 1.0), "composition": (-1.0, 1.0)}


@dataclass(frozen=True)
class ShiftSpec:
    stain: float = 0.0
    scanner: float = 0.0
    composition: float = 0.0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _RANGES.items():
            val = getattr(self, name)
            if not isinstance(val, int | float) or not math.isfinite(val) or not lo <= val <= hi:
                raise InputError(
                    f"shift {name}={val!r} is out of range [{lo}, {hi}]",
                    hint="e.g. --shift stain:0.5,scanner:0.3,composition:-0.2",
                )

    @classmethod
    def parse(cls, text: str | None) -> ShiftSpec:
        """`None`/'' → no shift; a preset name (see PRESETS); or 'stain:0.5,scanner:0.3'."""
        if text is None or not str(text).strip():
            return cls()
        text = str(text).strip()
        if text.lower() in PRESETS:
            return cls(**PRESETS[text.lower()])
        vals: dict[str, float] = {}
        for part in text.split(","):
            name, sep, num = part.partition(":")
            name = name.strip().lower()
            if not sep or name not in _RANGES:
                raise InputError(
                    f"cannot parse shift {text!r} (at {part!r})",
                    hint=f"use a preset {sorted(PRESETS)} or 'stain:0.5,scanner:0.3,composition:0.2'",
                )
            try:
                vals[name] = float(num)
            except ValueError:
                raise InputError(
                    f"shift {name} needs a number, got {num!r}", hint="e.g. stain:0.5"
                ) from None
        return cls(**vals)

    @property
    def is_null(self) -> bool:
        return self.stain == 0 and self.scanner == 0 and self.composition == 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    # ---- what the renderer applies ----------------------------------------------------------
    def mpp(self, base_mpp: float) -> float:
        return base_mpp * (1.0 + 0.4 * self.scanner)

    def jpeg_quality(self, base: int = 90) -> int:
        return int(round(base - 35 * self.scanner))

    def blur_sigma_px(self) -> float:
        return 1.6 * self.scanner

    def noise_sigma(self, base: float = 1.5) -> float:
        return base + 6.0 * self.scanner

    def stain_perturbation(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(direction (3, 3) per stain H/E/DAB, amount scale (3,)) for this cohort's stain shift."""
        rng = np.random.default_rng([seed, 9001])
        direction = rng.normal(size=(3, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        scale = 1.0 + self.stain * rng.uniform(-0.45, 0.45, size=3)
        return direction * 0.45 * self.stain, scale
