"""Re-measure the fit behind docs/spec.md 8.6 (the preset probes' noise model).

For every preset and probe, two rounding sequences of the same preset (eager vs addmm product
form, or transposed vs not for the tall-form presets; and the claimed precision vs a wider one)
are compared; the script prints the largest ratio ``distance / (u * acc * N)`` per dtype, N the
noise gain of swanref.presets.diagnose.  C_AMPLIFICATION must stay a few times above it.

    python tests/preset_noise_fit.py
"""
import math
import sys
from dataclasses import replace

import numpy as np

import swanref.presets  # noqa: F401 - registers the submodule
from swanref.presets.catalogue import PRESETS, run_preset, schedule

D = sys.modules["swanref.presets.diagnose"]


def main():
    worst = {}
    for dtype in ("float32", "bfloat16"):
        for name, p in PRESETS.items():
            if name == "custom":
                continue
            sched = schedule(name)
            em = dtype if dtype == "bfloat16" else None
            alt = replace(p, form="addmm" if p.form == "keller" else "keller") \
                if p.form in ("keller", "addmm") else replace(p, transpose="none")
            for pr in D.probes(dtype):
                G = pr.G
                with np.errstate(all="ignore"):
                    a = run_preset(G, p, sched, em)
                    b = run_preset(G, alt, sched, em)
                    c = (run_preset(G.astype(np.float64), p, sched).astype(np.float32)
                         if dtype == "float32" else run_preset(G, p, sched, None))
                m, n = G.shape[-2:]
                acc = 1.0 if dtype == "bfloat16" else 1 + math.sqrt(max(m, n))
                gain = max(D.noise_gain(g, p, sched)
                           for g in np.asarray(G, float).reshape((-1, m, n)))
                unit = D.UNIT_ROUNDOFF[dtype] * acc * gain
                if unit > 0:
                    r = max(D._distance(a, b), D._distance(a, c)) / unit
                    if np.isfinite(r) and r > worst.get(dtype, (0,))[0]:
                        worst[dtype] = (r, name, pr.label)
    for dtype, (r, name, label) in worst.items():
        print(f"{dtype}: largest distance / (u acc N) = {r:.2f} ({name}, {label}); "
              f"C_AMPLIFICATION = {D.C_AMPLIFICATION:g} (factor {D.C_AMPLIFICATION / r:.1f})")


if __name__ == "__main__":
    main()
