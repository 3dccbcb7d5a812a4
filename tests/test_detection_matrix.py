"""Detection matrix: for every preset and dtype, each one-knob variant is told apart from the
claim and named, and the faithful copy is accepted (docs/presets.md 7.1).

A knob that rounding makes invisible at a dtype (its distance from the claim below the claim's
per-probe tolerance everywhere) must be reported as a tie with the claim, never as a mismatch;
the table NOT_OBSERVABLE lists those cells and the test fails if one becomes observable (so the
list stays true).  The variants are built with ``dataclasses.replace`` on the preset, one field
at a time, and run through ``swanref.presets.run_preset`` (the emulated precision for bf16).
"""
import sys
from dataclasses import replace

import numpy as np
import pytest

import swanref.presets  # noqa: F401
from swanref.presets.catalogue import PRESETS, run_preset, schedule

D = sys.modules["swanref.presets.diagnose"]

NAMES = [n for n in PRESETS if n != "custom"]
DTYPES = ("float64", "float32", "bfloat16")


def _knobs(name, dtype):
    """(knob, Preset, schedule, precision, expected label prefixes)."""
    p = PRESETS[name]
    sched = schedule(name)
    out = []
    rounded = D._round_sched(sched)
    if p.form == "coupled":
        pass    # the coupled form implements the cubic map only: no coefficient knob
    elif rounded != tuple(tuple(float(v) for v in t) for t in sched):
        out.append(("coefficients off in the 4th decimal", p, rounded, dtype,
                    ("coefficients rounded to 4 decimals",)))
    else:   # already 4 decimals: one coefficient moved by 1e-4
        s2 = ((sched[0][0] + 1e-4,) + tuple(sched[0][1:]),) + tuple(sched[1:])
        out.append(("coefficients off in the 4th decimal", p, s2, dtype, ("MAP",)))
    out.append(("safety factor", replace(p, norm_scale=1.01 if p.norm_scale == 1 else 1.0),
                sched, dtype, ("norm safety factor",)))
    if p.norm in ("add", "clamp"):
        eps = 1e-8 if p.eps != 1e-8 else 1e-7
        out.append(("eps 1e-7 vs 1e-8", replace(p, eps=eps), sched, dtype,
                    (f"normalisation {p.norm!r} with eps={eps:g}", "preset")))
        other = "clamp" if p.norm == "add" else "add"
        out.append(("clamp vs add", replace(p, norm=other), sched, dtype,
                    (f"normalisation {other!r} with eps={p.eps:g}", "preset")))
    prec = {"float64": "bfloat16", "float32": "bfloat16", "bfloat16": "float32"}[dtype]
    out.append(("compute dtype", p, sched, prec, (f"computes in {prec}",)))
    out.append(("steps +1", p, sched + (D._next_triple(name, sched, None),), dtype,
                (f"{len(sched) + 1} steps",)))
    out.append(("steps -1", p, sched[:-1], dtype, (f"{len(sched) - 1} steps",)))
    out.append(("no transpose for tall input", replace(p, transpose="none"), sched, dtype,
                ("no transpose for tall input",)))
    return out


#: (knob, dtype) cells where rounding hides the knob on the probes (reported as ties).  The
#: transpose rule and a bf16 target computing in float32 are identical in exact arithmetic /
#: below bf16's noise everywhere; in bfloat16 only coefficient tables, step counts and tiny-norm
#: epsilons far apart are resolved (docs/presets.md 7.1 has the table).
NOT_OBSERVABLE = {
    ("no transpose for tall input", d) for d in DTYPES} | {
    ("compute dtype", "bfloat16"), ("coefficients off in the 4th decimal", "bfloat16")}
#: further cells per preset (filled from the measured matrix, docs/presets.md 7.1)
NOT_OBSERVABLE_FOR = {
    # convergent schedules (10 steps to a band of width 5e-4, or the cubic's fixed point) wash
    # a 1e-4 coefficient change out below float32's noise on every probe
    ("coefficients off in the 4th decimal", "float32", "deepseek_v4"),
    ("coefficients off in the 4th decimal", "float32", "cubic"),
}


def _fn(preset, sched, precision, dtype):
    def fn(G):
        G = np.asarray(G)
        if precision in ("bfloat16", "float16"):
            return run_preset(G.astype(np.float32), preset, sched, precision).astype(G.dtype)
        work = np.float64 if precision == "float64" else np.float32
        return run_preset(G.astype(work), preset, sched).astype(G.dtype)
    return fn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_detection_matrix(name, dtype):
    claim_prec = dtype
    d = D.diagnose(_fn(PRESETS[name], schedule(name), claim_prec, dtype), name, dtype=dtype)
    assert d.match and d.closest == f"preset {name!r}", d.summary()
    problems = []
    for knob, p, sched, prec, expect in _knobs(name, dtype):
        d = D.diagnose(_fn(p, sched, prec, dtype), name, dtype=dtype)
        hidden = (knob, dtype) in NOT_OBSERVABLE or (knob, dtype, name) in NOT_OBSERVABLE_FOR
        named = d.closest.startswith(expect) or any(t.startswith(expect) for t in d.ties) or (
            expect == ("MAP",) and ("map of the singular values" in d.note
                                    or d.closest.startswith("custom coefficients: triple 1 ")))
        if hidden or (dtype == "bfloat16" and d.match):
            # below the dtype's rounding noise: must be a reported tie, never a rejection
            if not d.match:
                problems.append(f"{knob}: listed as not observable but rejected: {d.summary()}")
            elif expect != ("MAP",) and not any(t.startswith(expect) for t in d.ties):
                problems.append(f"{knob}: a tie, but not reported among the ties: "
                                f"{d.summary()}")
        elif d.match:
            problems.append(f"{knob}: not told apart (a tie): {d.summary()}")
        elif not named:
            problems.append(f"{knob}: rejected but not named {expect}: {d.summary()}")
    assert not problems, "\n".join(problems)
