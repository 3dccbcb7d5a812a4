"""Stress for spec 6.4 (not collected by pytest): a thread writes NaN into G and restores it
while the main thread calls grad_norm and sinkgd_update with check_finite=True on the cpp
backend.  Prints the counts; a NaN result breaks the rule (timing dependent, so the suite
checks the rule deterministically instead: test_bad_input_matrix.py's
test_nan_written_during_the_call_is_an_error_not_a_result).

    python tests/race_check_finite.py [CALLS_PER_OPERATOR]
"""
from __future__ import annotations

import sys
import threading

import numpy as np

import swanref


def main(calls: int = 7300) -> dict:
    G = np.random.default_rng(0).standard_normal((64, 256))
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            k = i % G.size
            old = G.flat[k]
            G.flat[k] = np.nan
            G.flat[k] = old
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    counts = {"finite result": 0, "NaN result": 0, "ValueError": 0}
    try:
        for op in (swanref.grad_norm, swanref.sinkgd_update):
            for _ in range(calls):
                try:
                    out = op(G, backend="cpp")
                except ValueError:
                    counts["ValueError"] += 1
                else:
                    counts["finite result" if np.isfinite(out).all() else "NaN result"] += 1
    finally:
        stop.set()
        thread.join()
    return counts


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 7300)
    print(result)
    sys.exit(1 if result["NaN result"] else 0)
