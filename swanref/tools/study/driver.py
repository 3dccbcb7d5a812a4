"""Running the studies: the ``swanref study`` command line and :func:`run`."""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time

from swanref.backends import registry as _backends
from swanref.tools.study import writers
from swanref.tools.study.band import study_band
from swanref.tools.study.common import Context
from swanref.tools.study.condition import study_condition
from swanref.tools.study.divergence import study_divergence
from swanref.tools.study.nullspace import study_nullspace
from swanref.tools.study.steps import study_steps
from swanref.tools.study.timing import blas_threads, study_timing
from swanref.tools.threads import limit_blas_threads

STUDIES = {
    "condition": study_condition,
    "steps": study_steps,
    "band": study_band,
    "nullspace": study_nullspace,
    "divergence": study_divergence,
    "timing": study_timing,
}
STUDY_NAMES = tuple(STUDIES)
#: what runs by default: timing depends on the machine and dominated the run time, so opt-in
ACCURACY_STUDIES = STUDY_NAMES[:-1]


def portable_command(argv) -> str:
    """The command as recorded in numbers.json and the index: an absolute path (this
    machine's) is written as its last component, so no output names a development path."""
    return "swanref study " + " ".join(os.path.basename(a.rstrip("/\\")) or a
                                       if os.path.isabs(a) else a for a in argv)


def run(outdir, *, quick=False, backends=None, only=None, seed=0, command=None,
        stream=None, grid=None) -> list:
    """Run the selected studies (default: the accuracy studies) into ``outdir``.

    ``grid`` overrides grid entries of every study (``{"kappas": [...], ...}``); returns the
    list of Results.
    """
    import matplotlib
    matplotlib.use("Agg")
    os.makedirs(outdir, exist_ok=True)
    avail = [b for b in _backends.available() if b != "cupy"]
    backends = list(backends or avail)
    names = list(only or ACCURACY_STUDIES)
    ctx = Context(quick=quick, backend=backends[0], backends=backends, seed=seed,
                  progress_stream=stream, grid=dict(grid or {}))
    meta = {"command": command or portable_command([outdir] + (["--quick"] if quick else [])),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": writers.machine(), "blas_threads": blas_threads(),
            "backend": ctx.backend, "backends": backends, "versions": writers.versions(),
            "quick": quick, "seed": seed}
    t0, c0 = time.perf_counter(), time.process_time()
    results = []
    for name in names:
        start = time.perf_counter()
        res = STUDIES[name](ctx)
        res.seconds = time.perf_counter() - start
        writers.write_result(res, outdir, meta)
        results.append(res)
    meta["seconds"] = time.perf_counter() - t0
    # wall time depends on the machine's load; the CPU time of this process much less
    meta["cpu_seconds"] = time.process_time() - c0
    writers.write_numbers(results, outdir, meta)
    writers.write_index(results, outdir, meta)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="swanref study", description="numerical accuracy studies with plots "
        "(PNG, SVG, CSV, JSON, numbers.json and an index page in OUTDIR)")
    parser.add_argument("outdir", metavar="OUTDIR",
                        help="output folder (created if missing; files in it are overwritten)")
    parser.add_argument("--quick", action="store_true",
                        help="coarse grids (about 10 s); default: finer grids, about a minute")
    parser.add_argument("--timing", action="store_true",
                        help="also run the timing study (time per call versus size, every "
                             "backend; several minutes on 2 cores)")
    parser.add_argument("--backend", action="append", choices=_backends.names(),
                        help="backend(s): the first runs the accuracy studies, all are timed "
                             "(default: every CPU backend available)")
    parser.add_argument("--only", action="append", choices=STUDY_NAMES, metavar="NAME",
                        help=f"run only these studies ({', '.join(STUDY_NAMES)}); repeatable "
                             "(default: all but timing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default: 1; 0 leaves the BLAS default)")
    args = parser.parse_args(argv)
    for name in args.backend or []:
        if not _backends.is_available(name):
            parser.error(f"backend {name!r} is not available here")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("swanref study: needs matplotlib (pip install 'swanref[plot]')", file=sys.stderr)
        return 2
    only = args.only or (list(ACCURACY_STUDIES) + (["timing"] if args.timing else []))
    if args.timing and "timing" not in only:
        only.append("timing")
    command = portable_command(argv if argv is not None else sys.argv[1:])
    import scipy.linalg  # noqa: F401  (load every BLAS before limiting its threads)
    limiter = limit_blas_threads(args.threads)
    try:
        t0 = time.perf_counter()
        results = run(args.outdir, quick=args.quick, backends=args.backend, only=only,
                      seed=args.seed, command=command)
    finally:
        if limiter is not None:
            limiter.unregister()
    print(f"swanref study: {len(results)} studies in {time.perf_counter() - t0:.1f} s; "
          f"open {os.path.join(args.outdir, 'index.md')} (or index.html)")
    for r in results:
        print(f"\n[{r.name}] {r.title} ({r.seconds:.1f} s)")
        for x in r.findings:
            print(f"  - {x}")
    return 0
