"""Golden-vector ratchet: each backend's observed error on the shipped vectors, recorded, so a
regression of ``FACTOR`` (10x) fails although the model tolerance would still pass.

The model tolerance in the manifest stays the contract for third-party code; this file holds
swanref's own backends to what they achieve (as scipy's xsf records per-platform errors).
Regenerate after an intended accuracy change with ``python -m swanref.verify.ratchet --write``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from swanref.backends import registry
from swanref.spec.tolerance import unit_roundoff
from swanref.verify import vectors as V
from swanref.verify.vectors.files import case_array

__all__ = ["FACTOR", "OBSERVED", "observe", "regressions", "load", "main"]

#: a backend fails when its error exceeds FACTOR times the recorded one
FACTOR = 10.0
OBSERVED = os.path.join(os.path.dirname(V.SHIPPED), f"observed-{os.path.basename(V.SHIPPED)}.json")


def observe(backend: str, directory: str = V.SHIPPED) -> dict[str, float]:
    """{case name: error of ``backend`` against the expected output} over the whole set."""
    manifest = V.load_manifest(directory)
    errors = {}
    for group, test in V.iter_tests(manifest):
        G = case_array(directory, test, "input")
        expected = case_array(directory, test, "expected")
        out = V.swanref_impl(group["op"], group["reading"], G, backend=backend)
        errors[test["name"]] = V.metric_error(group["metric"], np.asarray(out), expected, test)
    return errors


def load(path: str = OBSERVED) -> dict:
    with open(path) as fh:
        return json.load(fh)


def regressions(observed: dict[str, float], current: dict[str, float], dtypes: dict[str, str],
                factor: float = FACTOR) -> list[str]:
    """Cases whose current error exceeds ``factor * max(recorded, unit roundoff)``.

    The unit-roundoff floor keeps a recorded 0 (bit-exact today) from failing on the first
    rounding difference of another BLAS build.
    """
    bad = []
    for name, err in sorted(current.items()):
        if name not in observed:
            bad.append(f"{name}: no recorded error (regenerate {OBSERVED})")
            continue
        limit = factor * max(observed[name], unit_roundoff(np.dtype(dtypes[name])))
        if not err <= limit:
            bad.append(f"{name}: error {err:.3g} > {factor:g} x recorded "
                       f"{observed[name]:.3g} (limit {limit:.3g})")
    return bad


def case_dtypes(directory: str = V.SHIPPED) -> dict[str, str]:
    return {t["name"]: t["input"]["dtype"] for _, t in V.iter_tests(V.load_manifest(directory))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m swanref.verify.ratchet",
                                description="Record (--write) or check each CPU backend's "
                                            "error on the shipped golden vectors.")
    p.add_argument("--write", action="store_true", help=f"rewrite {os.path.basename(OBSERVED)}")
    args = p.parse_args(argv)
    backends = [b for b in ("reference", "cpp") if registry.is_available(b)]
    if args.write:
        data = {"factor": FACTOR, "command": "python -m swanref.verify.ratchet --write",
                "backends": {b: observe(b) for b in backends}}
        with open(OBSERVED, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"wrote {OBSERVED} ({', '.join(backends)})")
        return 0
    recorded, dtypes, status = load()["backends"], case_dtypes(), 0
    for b in backends:
        bad = regressions(recorded.get(b, {}), observe(b), dtypes)
        print(f"{b}: {'ok' if not bad else f'{len(bad)} regressions'}")
        for line in bad:
            print(f"  {line}")
        status |= bool(bad)
    return status


if __name__ == "__main__":
    sys.exit(main())
