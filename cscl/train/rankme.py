"""RankMe smooth rank (Garrido et al. 2023): exp(entropy of the normalised singular values).

Label-free checkpoint selection: a higher smooth rank of the training H&E embeddings means a less
collapsed representation. CSCL picks the epoch with the highest value after a warm-up.
"""

from __future__ import annotations

import numpy as np


def smooth_rank(X: np.ndarray, eps: float = 1e-7) -> float:
    """X: (n, d) embeddings. Returns a value in [1, min(n, d)]."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or min(X.shape) == 0:
        raise ValueError(f"need a non-empty 2-D matrix, got shape {X.shape}")
    s = np.linalg.svd(X, compute_uv=False)
    p = s / (s.sum() + eps) + eps
    return float(np.exp(-(p * np.log(p)).sum()))
