"""cscl: Cross-Stain Contrastive Learning for computational pathology.

The library has no Kubeflow imports; components/ and pipelines/ wrap it.
"""

import os

# Idle OpenMP threads must sleep, not spin: extraction runs the model's threads beside decoding
# workers on the same cores, and spinning made it ~2.8x slower (docs/PERFORMANCE.md). libgomp
# reads this once, when torch loads, so it is set here, before any cscl module imports torch;
# a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
