"""Pinning BLAS threads for the CLI jobs (benchmarks, studies, demo).

Two OpenBLAS pools (NumPy's and SciPy's) on a 2-core machine oversubscribe badly, so the jobs
limit every BLAS in the process through threadpoolctl when it is installed.
"""
from __future__ import annotations


def limit_blas_threads(threads):
    """A threadpoolctl limiter holding every BLAS at ``threads`` (None: 0/None or no threadpoolctl).

    Keep the returned object alive (and call ``.restore_original_limits()`` when done) for the limit to hold.
    """
    if not threads:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads)
