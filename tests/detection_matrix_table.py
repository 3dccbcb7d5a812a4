"""Print which one-knob variants rounding hides (reported as ties) per dtype: the table of
docs/presets.md 7.1.  Run from the repository root: python tests/detection_matrix_table.py"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_detection_matrix as T  # noqa: E402

for dtype in T.DTYPES:
    hidden = {}
    for name in T.NAMES:
        for knob, p, sched, prec, expect in T._knobs(name, dtype):
            if T.D.diagnose(T._fn(p, sched, prec, dtype), name, dtype=dtype).match:
                hidden.setdefault(knob, []).append(name)
    print(dtype + (": every knob told apart and named" if not hidden else ""))
    for k, v in hidden.items():
        print(f"  {k}: {len(v)}/{len(T.NAMES)} presets ({', '.join(v)})")
