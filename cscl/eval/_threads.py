"""Run the evaluation's many small numpy/sklearn fits with one BLAS thread.

Measured here: a few-shot run took 7.3 s with threaded OpenBLAS on a loaded 2-core machine and
0.9 s with one thread — tiny matrix products gain nothing from threads, which spin-wait instead.
"""

from __future__ import annotations

import functools


def one_blas_thread(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return fn(*args, **kwargs)

    return wrapper
