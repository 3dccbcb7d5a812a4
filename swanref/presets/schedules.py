"""Coefficient-schedule verifier and Polar Express coefficient generator (docs/presets.md, 5).

A schedule is a list of odd polynomials ``p_k(x) = a_k x + b_k x^3 + c_k x^5`` and an input
divisor ``d`` (the safety factor on the norm: 1.02 for the speedrun Polar Express).  A preset
maps a normalised singular value ``x = s / ||G||_F`` to ``F(x) = p_K(...p_1(x / d))``.  This
module computes, in high precision (mpmath):

* ``slope0``: ``F'(0) = prod(a_k) / d`` -- the amplification of anything tiny, including
  rounding noise in null directions;
* ``band(l)``: ``[min, max]`` of ``F`` over ``x in [l, 1]``: where the normalised singular values
  of a matrix with ``s_min / ||G||_F >= l`` end up;
* ``blowup(bound)``: the largest ``x* >= 1`` with ``|F(x)| <= bound`` on all of ``[0, x*]``: how
  far an underestimated norm may push singular values before the output explodes;
* ``leak(dtype)``: ``F(u)`` and ``F(u)/u`` with ``u`` the unit roundoff of ``dtype``: what a
  null-space component of one rounding unit comes out as;

and regenerates the Polar Express coefficients from their definition (Amsel et al. 2025,
arXiv 2505.16932: per step the odd quintic minimising ``max |1 - p|`` on ``[l, u]``, found by a
Remez iteration with 4-point equioscillation, with cushion and safety factor).

Command line: ``swanref schedule PRESET|FILE [--lower L ...] [--bound B] [--dtype D ...]
[--steps K] [--divisor D] [--json]`` and ``swanref schedule --generate L ITERS [--safety EPS]
[--cushion C]``.  FILE is JSON (``{"coefficients": [[a, b, c], ...], "divisor": 1.0}``, which
includes PolarExpress's ``save_coefficients`` files) or text with one ``a b c`` per line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import mpmath as mp
import numpy as np

from swanref.presets import catalogue as presets
from swanref.presets.coefficient_files import read_coefficient_file
from swanref.spec.validate import iteration_count

__all__ = ["Schedule", "from_preset", "load", "optimal_quintic", "optimal_composition",
           "analyse", "main", "UNIT_ROUNDOFF", "PE_CUSHION_PAPER"]

DPS = 40

#: unit roundoff u = 2^-p per dtype name
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11, "float32": 2.0 ** -24,
                 "float64": 2.0 ** -53}

#: the cushion of the Polar Express paper's appendix code (and of PolarExpress basic.py's table)
PE_CUSHION_PAPER = "0.02407327424182761"


class Schedule:
    """Per-step coefficients and the input divisor; evaluation in float64 and in mpmath."""

    def __init__(self, coefficients, divisor=1.0, name="schedule"):
        triples = []
        for t in coefficients:
            t = tuple(t)
            if len(t) == 2:
                t = t + (0,)
            if len(t) != 3:
                raise ValueError(f"each step must be (a, b, c) or (a, b); got {t}")
            triples.append(t)
        if not all(math.isfinite(float(v)) for t in triples for v in t):
            raise ValueError("coefficients must be finite numbers")
        if not (math.isfinite(float(divisor)) and float(divisor) > 0):
            raise ValueError(f"the divisor must be a finite number > 0, got {divisor!r}")
        self.coefficients = tuple(triples)
        self.divisor = divisor
        self.name = name
        # floats enter exactly (the binary double the source computes with)
        self._mp = [tuple(mp.mpf(v) for v in t) for t in triples]
        self._mpdiv = mp.mpf(divisor)

    def __len__(self):
        return len(self.coefficients)

    def f64(self, x):
        """``F(x)`` in float64 (inf/NaN on overflow), vectorised."""
        y = np.asarray(x, dtype=np.float64) / float(self.divisor)
        with np.errstate(over="ignore", invalid="ignore"):
            for a, b, c in self.coefficients:
                y2 = y * y
                y = y * (float(a) + y2 * (float(b) + float(c) * y2))
        return y

    def mp(self, x):
        """``F(x)`` in mpmath at the working precision."""
        y = mp.mpf(x) / self._mpdiv
        for a, b, c in self._mp:
            y2 = y * y
            y = y * (a + y2 * (b + c * y2))
        return y

    def slope0(self):
        s = 1 / self._mpdiv
        for a, _, _ in self._mp:
            s *= a
        return s


def from_preset(name: str, steps=None) -> Schedule:
    p = presets.get_preset(name)
    return Schedule(presets.schedule(name, steps), p.norm_scale, name)


def load(path: str, steps=None) -> Schedule:
    """A schedule from a coefficient file (:mod:`swanref.presets.coefficient_files`);
    ``steps`` truncates the table or repeats its last step."""
    coeffs, divisor = read_coefficient_file(path)
    if steps is not None:
        steps = iteration_count(steps, "steps")
        coeffs = list(coeffs[:steps]) + [coeffs[-1]] * max(0, steps - len(coeffs))
    return Schedule(coeffs, divisor, os.fspath(path))


# -- the four numbers ------------------------------------------------------------------------

def _golden(f, lo, hi, sign, iters=120):
    """Extremum of ``sign * f`` (maximum) on [lo, hi] by golden-section search in mpmath."""
    g = (mp.sqrt(5) - 1) / 2
    a, b = mp.mpf(lo), mp.mpf(hi)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = sign * f(c), sign * f(d)
    for _ in range(iters):
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = sign * f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = sign * f(d)
    x = (a + b) / 2
    return x, f(x)


def band(s: Schedule, lower, upper=1.0, grid=20001):
    """``(min F, max F)`` over ``[lower, upper]`` in mpmath, each with its argument."""
    with mp.workdps(DPS):
        lo, hi = float(lower), float(upper)
        xs = np.unique(np.concatenate([np.geomspace(lo, hi, grid), np.linspace(lo, hi, grid)]))
        ys = s.f64(xs)
        out = []
        for sign in (-1, 1):
            v = sign * ys
            # local maxima of v (endpoints included), best few refined in high precision
            interior = np.nonzero((v[1:-1] >= v[:-2]) & (v[1:-1] >= v[2:]))[0] + 1
            cand = np.concatenate([[0, len(xs) - 1], interior])
            cand = cand[np.argsort(-v[cand])][:6]
            best = None
            for i in cand:
                if i in (0, len(xs) - 1):
                    x = mp.mpf(repr(float(xs[i])))
                    val = s.mp(x)
                else:
                    x, val = _golden(s.mp, repr(float(xs[i - 1])), repr(float(xs[i + 1])), sign)
                if best is None or sign * val > sign * best[1]:
                    best = (x, val)
            out.append(best)
        (xmin, fmin), (xmax, fmax) = out
        return fmin, fmax, xmin, xmax


def blowup(s: Schedule, bound=2.0, xmax=4.0, step=1e-4):
    """Largest ``x >= 1`` with ``|F| <= bound`` on ``[0, x]`` (``inf`` if beyond ``xmax``)."""
    with mp.workdps(DPS):
        xs = 1.0 + np.arange(0.0, xmax - 1.0 + step, step)
        ys = np.abs(s.f64(xs))
        bad = np.nonzero(~(ys <= bound))[0]
        if len(bad) == 0:
            return mp.inf
        i = int(bad[0])
        if i == 0:
            return mp.mpf(1)
        a, b = mp.mpf(repr(float(xs[i - 1]))), mp.mpf(repr(float(xs[i])))
        for _ in range(100):
            mid = (a + b) / 2
            if abs(s.mp(mid)) <= bound:
                a = mid
            else:
                b = mid
        return a


def leak(s: Schedule, dtype: str, noise=1.0):
    """``(F(delta), F(delta)/delta)`` for ``delta = noise * u(dtype)``."""
    with mp.workdps(DPS):
        delta = mp.mpf(noise) * mp.mpf(UNIT_ROUNDOFF[dtype])
        out = s.mp(delta)
        return out, out / delta


def analyse(s: Schedule, lowers=(1e-2, 1e-3, 1e-4), bound=2.0,
            dtypes=("bfloat16", "float16", "float32"), probes=(1.02, 1.05, 1.1, 1.2, 1.3)):
    """Everything ``swanref schedule`` prints, as plain floats."""
    with mp.workdps(DPS):
        res = {"name": s.name, "steps": len(s), "divisor": float(s.divisor),
               "slope0": float(s.slope0()), "band": {}, "blowup_bound": bound,
               "blowup": float(blowup(s, bound)), "leak": {}, "probe": {}}
        for lo in lowers:
            fmin, fmax, _, _ = band(s, lo)
            res["band"][lo] = (float(fmin), float(fmax))
        for dt in dtypes:
            out, amp = leak(s, dt)
            res["leak"][dt] = (float(out), float(amp))
        for x in probes:
            res["probe"][x] = mp.nstr(abs(s.mp(mp.mpf(repr(x)))), 3)  # may exceed float range
        return res


# -- Polar Express coefficients from their definition --------------------------------------

def optimal_quintic(l, u):
    """The odd quintic ``a x + b x^3 + c x^5`` minimising ``max_{[l, u]} |1 - p|`` (mpmath).

    Remez exchange with the 4 alternation points ``l < q < r < u`` (q, r the critical points of
    p), from ``q = (3l + u)/4``, ``r = (l + 3u)/4``.  As in the reference implementation, for
    ``l/u >= 1 - 5e-6`` the answer is taken to be the limit ``(15/8, -10/8, 3/8)`` scaled to u.
    """
    l, u = mp.mpf(l), mp.mpf(u)
    if not 0 <= l <= u:
        raise ValueError("need 0 <= l <= u")
    if 1 - mp.mpf("5e-6") <= l / u:
        return (mp.mpf(15) / 8 / u, mp.mpf(-10) / 8 / u ** 3, mp.mpf(3) / 8 / u ** 5)
    q, r = (3 * l + u) / 4, (l + 3 * u) / 4
    E_old = None
    tol = mp.mpf(10) ** (-(mp.mp.dps - 5))
    for _ in range(500):
        M = mp.matrix([[l, l ** 3, l ** 5, 1], [q, q ** 3, q ** 5, -1],
                       [r, r ** 3, r ** 5, 1], [u, u ** 3, u ** 5, -1]])
        a, b, c, E = mp.lu_solve(M, mp.matrix([1, 1, 1, 1]))
        disc = mp.sqrt(9 * b ** 2 - 20 * a * c)
        q, r = mp.sqrt((-3 * b - disc) / (10 * c)), mp.sqrt((-3 * b + disc) / (10 * c))
        if E_old is not None and abs(E - E_old) < tol:
            break
        E_old = E
    return a, b, c


def _p(cf, x):
    a, b, c = cf
    return a * x + b * x ** 3 + c * x ** 5


def optimal_composition(l, num_iters, safety_factor_eps=0, cushion=0, dps=DPS):
    """Polar Express coefficient schedule (mpmath numbers), as defined by Amsel et al.

    Per step: the optimal quintic on ``[max(l, cushion*u), u]``; if the cushion was active,
    rescale so that ``p(l)`` and ``p(u)`` straddle 1 symmetrically; on all but the last step,
    divide coefficient k by ``(1 + safety_factor_eps)^(2k+1)``; then ``l <- p(l)``,
    ``u <- 2 - l`` (and ``l <- min(l, u)``).
    """
    with mp.workdps(dps):
        l, u = mp.mpf(l), mp.mpf(1)
        sf = 1 + mp.mpf(safety_factor_eps)
        cushion = mp.mpf(cushion)
        out = []
        for it in range(num_iters):
            eff = max(l, cushion * u) if cushion > 0 else l
            cf = list(optimal_quintic(eff, u))
            if cushion > 0 and cushion * u > l:
                scale = 2 / (_p(cf, l) + _p(cf, u))
                cf = [v * scale for v in cf]
            if it < num_iters - 1 and sf != 1:
                cf = [cf[0] / sf, cf[1] / sf ** 3, cf[2] / sf ** 5]
            out.append(tuple(+v for v in cf))
            l = _p(cf, l)
            u = 2 - l
            l = min(l, u)
        return out


# -- command line ------------------------------------------------------------------------------

def _fmt(x, digits=6):
    return mp.nstr(mp.mpf(x), digits) if not isinstance(x, str) else x


def _print_analysis(res, out):
    w = out.write
    w(f"schedule {res['name']}: {res['steps']} steps, input divisor {res['divisor']:g}\n")
    w(f"  slope at 0 (prod a_k / divisor): {res['slope0']:.6g}\n")
    w("  output band of F over [l, 1] (normalised singular values s/||G||_F):\n")
    for lo, (fmin, fmax) in res["band"].items():
        w(f"    l = {lo:<8g} [{fmin:.6f}, {fmax:.6f}]   max |F - 1| = "
          f"{max(abs(1 - fmin), abs(fmax - 1)):.3g}\n")
    b = res["blowup"]
    w(f"  blow-up margin: |F(x)| <= {res['blowup_bound']:g} for all x in [0, {b:.6g}]"
      f"{'  (beyond the scan)' if math.isinf(b) else ''}\n")
    w("  |F(x)| just above 1: " + ", ".join(f"F({x:g}) = {v}" for x, v in res["probe"].items())
      + "\n")
    w("  null-space leakage: a component of one unit roundoff u comes out as F(u):\n")
    for dt, (val, amp) in res["leak"].items():
        w(f"    {dt:<9} u = {UNIT_ROUNDOFF[dt]:.3g}: F(u) = {val:.4g}  (amplification {amp:.4g})\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="swanref schedule",
        description="Analyse a Newton-Schulz coefficient schedule (slope at 0, band, blow-up "
                    "margin, null-space leakage) or regenerate Polar Express coefficients.")
    ap.add_argument("schedule", nargs="?", help="a preset name (swanref.presets) or a file")
    ap.add_argument("--steps", type=int, help="steps (presets: override; files: truncate/repeat)")
    ap.add_argument("--divisor", type=float, help="input divisor (safety factor on the norm)")
    ap.add_argument("--lower", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4],
                    help="lower ends l of the band [l, 1] (default 1e-2 1e-3 1e-4)")
    ap.add_argument("--bound", type=float, default=2.0, help="blow-up bound (default 2)")
    ap.add_argument("--dtype", nargs="+", default=["bfloat16", "float16", "float32"],
                    choices=sorted(UNIT_ROUNDOFF), help="dtypes for the leakage figure")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--generate", nargs=2, metavar=("L", "ITERS"),
                    help="print the Polar Express schedule for lower bound L and ITERS steps")
    ap.add_argument("--safety", default="0", help="safety factor eps for --generate (1 + eps)")
    ap.add_argument("--cushion", default="0", help="cushion for --generate "
                    f"(paper: {PE_CUSHION_PAPER})")
    args = ap.parse_args(argv)

    if args.generate:
        coeffs = optimal_composition(args.generate[0], int(args.generate[1]), args.safety,
                                     args.cushion)
        if args.json:
            print(json.dumps({"coefficients": [[float(v) for v in t] for t in coeffs],
                              "params": {"l": args.generate[0], "num_iters": args.generate[1],
                                         "safety_factor_eps": args.safety,
                                         "cushion": args.cushion}}, indent=1))
        else:
            for t in coeffs:
                print("(" + ", ".join(repr(float(v)) for v in t) + "),")
        return 0
    if not args.schedule:
        ap.print_usage(sys.stderr)
        print("swanref schedule: give a PRESET or FILE, or --generate L ITERS", file=sys.stderr)
        return 2
    try:
        if args.schedule in presets.PRESETS:
            sched = from_preset(args.schedule, args.steps)
        else:
            sched = load(args.schedule, args.steps)
        if args.divisor is not None:
            sched = Schedule(sched.coefficients, args.divisor, sched.name)
        if not all(0 < v <= 1 for v in args.lower):
            raise ValueError(f"--lower values must lie in (0, 1], got {args.lower}")
        if not (math.isfinite(args.bound) and args.bound > 0):
            raise ValueError(f"--bound must be a finite number > 0, got {args.bound}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"swanref schedule: {exc}", file=sys.stderr)
        return 2
    res = analyse(sched, tuple(args.lower), args.bound, tuple(args.dtype))
    if args.json:
        res = dict(res)
        res["band"] = {repr(k): v for k, v in res["band"].items()}
        res["probe"] = {repr(k): v for k, v in res["probe"].items()}
        print(json.dumps(res, indent=1))
    else:
        _print_analysis(res, sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
