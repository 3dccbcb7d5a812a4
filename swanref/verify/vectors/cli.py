"""The two commands: ``swanref vectors OUTDIR`` and ``swanref check-vectors DIR``."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from swanref.spec.readings import SPEC_VERSION
from swanref.verify.vectors.build import write_vectors
from swanref.verify.vectors.check import check_outputs
from swanref.verify.vectors.files import iter_tests, load_manifest
from swanref.verify.vectors.schema import SCHEMA, SHIPPED, VectorError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise VectorError(message)


def _argv(p, argv):
    """The command's arguments, or None after printing its help for -h/--help anywhere among
    them (before the other arguments are checked)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        p.print_help()
        return None
    return argv


def main_write(argv=None) -> int:
    """``swanref vectors OUTDIR [--force]``."""
    p = _Parser(prog="swanref vectors",
                description="Write the golden test vectors (manifest.json, index.tsv, "
                            "SHA256SUMS, cases/*.npy) into OUTDIR.")
    p.add_argument("outdir", metavar="OUTDIR",
                   help="folder to write the vector set into (created; must be empty "
                        "unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty OUTDIR")
    argv = _argv(p, argv)
    if argv is None:
        return 0
    try:
        args = p.parse_args(argv)
        if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
            raise VectorError(f"{args.outdir!r} exists and is not a directory")
        if os.path.isdir(args.outdir) and os.listdir(args.outdir) and not args.force:
            raise VectorError(f"{args.outdir!r} is not empty (use --force to overwrite)")
        cases = os.path.join(args.outdir, "cases")
        if args.force and (os.path.islink(cases) or os.path.lexists(cases)
                           and not os.path.isdir(cases)):
            os.unlink(cases)  # the link (or file) itself, never what it points to
        elif args.force and os.path.isdir(cases):
            shutil.rmtree(cases)
        manifest = write_vectors(args.outdir)
    except (VectorError, OSError) as exc:
        print(f"swanref vectors: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest['numberOfTests']} cases (spec {SPEC_VERSION}, schema {SCHEMA}) "
          f"to {args.outdir}")
    return 0


def main_check(argv=None) -> int:
    """``swanref check-vectors DIR [--outputs OUTDIR] [--op OP] [--dtype DT] [--json]``."""
    p = _Parser(prog="swanref check-vectors",
                description="Verify an implementation's outputs (<case>.out.npy) against golden "
                            "vectors. Exit 0 all pass, 1 a case fails or is missing, 2 usage "
                            "error or corrupted vectors. DIR 'shipped' names the copy "
                            "shipped with swanref.")
    p.add_argument("dir", metavar="DIR",
                   help="the vector set (a folder written by 'swanref vectors'), or 'shipped'")
    p.add_argument("--outputs", default=None,
                   help="directory holding <name>.out.npy (default: DIR/cases)")
    p.add_argument("--op", action="append", default=None, help="only cases of this op")
    p.add_argument("--dtype", action="append", default=None, help="only inputs of this dtype")
    p.add_argument("--case", action="append", default=None, help="only this case name")
    p.add_argument("--allow-missing", action="store_true",
                   help="skip cases without an output instead of failing them")
    p.add_argument("--json", action="store_true",
                   help="print the results as JSON instead of a table (default: table)")
    argv = _argv(p, argv)
    if argv is None:
        return 0
    try:
        args = p.parse_args(argv)
        directory = SHIPPED if args.dir == "shipped" else args.dir
        if not os.path.isdir(directory):
            raise VectorError(f"no such directory: {args.dir}")
        if args.outputs is not None and not os.path.isdir(args.outputs):
            raise VectorError(f"no such directory: {args.outputs}")
        manifest = load_manifest(directory)
        known_ops = {g["op"] for g in manifest["testGroups"]}
        for op in args.op or []:
            if op not in known_ops:
                raise VectorError(f"unknown --op {op!r}; the set has {sorted(known_ops)}")
        known = {t["name"] for _, t in iter_tests(manifest)}
        for name in args.case or []:
            if name not in known:
                raise VectorError(f"unknown --case {name!r}")
        results = check_outputs(directory, args.outputs, ops=args.op, dtypes=args.dtype,
                                names=args.case, allow_missing=args.allow_missing)
        if not results:
            raise VectorError("no case matches the selection")
    except VectorError as exc:
        print(f"swanref check-vectors: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError,
            MemoryError) as exc:
        # what validation did not foresee is still a malformed set, not a traceback
        print(f"swanref check-vectors: error: malformed vector set: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    failed = [r for r in results if r["status"] == "FAIL"]
    # every case skipped as missing checks nothing: that is not a pass
    nothing_checked = all(r["status"] == "missing" for r in results)
    code = 1 if failed or nothing_checked else 0
    if nothing_checked:
        print(f"swanref check-vectors: nothing checked: no output found for any of the "
              f"{len(results)} selected cases (--allow-missing skips some, not all)",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"spec_version": manifest.get("specVersion"), "schema": SCHEMA,
                          "passed": code == 0, "exit_code": code,
                          "counts": {s: sum(r["status"] == s for r in results)
                                     for s in ("pass", "FAIL", "missing")},
                          "results": results}, indent=1))
        return code
    w = max(len(r["name"]) for r in results)
    print(f"swanref check-vectors {args.dir} (spec {manifest.get('specVersion')}, "
          f"{len(results)} cases)")
    print(f"{'case':<{w}}  {'op':<13}  {'result':<7}  {'error':>9}  {'tolerance':>9}  flags")
    for r in results:
        err = "" if r["error"] is None else f"{r['error']:.3g}"
        print(f"{r['name']:<{w}}  {r['op']:<13}  {r['status']:<7}  {err:>9}  "
              f"{r['tolerance']:>9.3g}  {','.join(r['flags'])}")
    for r in failed:
        print(f"[FAIL] {r['name']}: {r['message']}")
    n_pass = sum(r["status"] == "pass" for r in results)
    n_missing = sum(r["status"] == "missing" for r in results)
    print(f"{n_pass} passed, {len(failed)} failed, {n_missing} missing (skipped)")
    return code
