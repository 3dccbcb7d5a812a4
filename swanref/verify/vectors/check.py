"""Checking an implementation against a vector set: the metrics, ``check_outputs``, and
``write_outputs`` (run an implementation on every case), with swanref's own as ``swanref_impl``."""
from __future__ import annotations

import math
import os

import numpy as np

from swanref import ops as api
from swanref.spec.output_files import replace_file
from swanref.verify import measure as A
from swanref.verify.vectors.files import (case_array, iter_tests, load_manifest, npy_bytes,
                                          output_path, read_npy, verify_checksums)
from swanref.verify.vectors.schema import MAX_FILE_BYTES, VectorError


def metric_error(metric, out, expected, extra=None) -> float:
    """The case's error (total: never NaN)."""
    out = np.asarray(out)
    if metric == "max_mixed":
        e = A.mixed_error(out, expected)
        return float(np.max(e)) if e.size else 0.0
    fro = np.atleast_1d(A.fro_error(out, expected))
    if metric == "fro_per_sqrt_rank":
        rank = np.maximum(np.asarray((extra or {}).get("rank", [1])), 1).reshape(fro.shape)
        return float(np.max(fro / np.sqrt(rank)))
    if metric == "fro_per_sqrt_min_side":
        return float(np.max(fro / math.sqrt(min(np.shape(expected)[-2:]))))
    den = np.atleast_1d(np.sqrt(np.sum(np.asarray(expected, np.float64) ** 2, axis=(-2, -1))))
    return float(np.max(np.where(den > 0, fro / np.where(den > 0, den, 1), fro)))


def check_outputs(directory, outputs=None, *, ops=None, dtypes=None, names=None,
                  allow_missing=False) -> list[dict]:
    """One result dict per selected case: status pass/FAIL/missing, error, tolerance."""
    manifest = load_manifest(directory)
    problems = verify_checksums(directory, manifest)
    if problems:
        raise VectorError("vector set corrupted: " + "; ".join(problems[:10]))
    results = []
    for group, test in iter_tests(manifest):
        if ops and group["op"] not in ops:
            continue
        if dtypes and test["input"]["dtype"] not in dtypes:
            continue
        if names and test["name"] not in names:
            continue
        out_path = output_path(directory, test, outputs)
        res = {"tcId": test.get("tcId"), "name": test["name"], "op": group["op"],
               "reading": group["reading"], "flags": test.get("flags", []),
               "metric": group["metric"], "tolerance": test["tolerance"], "error": None,
               "status": "pass", "output": out_path, "message": ""}
        case_array(directory, test, "input")  # a malformed input is a corrupted set too
        expected = case_array(directory, test, "expected")
        if not os.path.isfile(out_path):
            res["status"] = "missing" if allow_missing else "FAIL"
            res["message"] = f"no output file {out_path}"
            results.append(res)
            continue
        try:
            if os.path.getsize(out_path) > MAX_FILE_BYTES:
                raise ValueError(f"{os.path.getsize(out_path)} bytes, above the limit")
            out = read_npy(out_path)
        except (ValueError, OSError) as exc:  # a malformed output is a failed case
            res["status"], res["message"] = "FAIL", f"cannot read output: {exc}"
            results.append(res)
            continue
        if list(out.shape) != test["input"]["shape"]:
            res["status"] = "FAIL"
            res["message"] = f"output shape {list(out.shape)} != input shape " \
                             f"{test['input']['shape']}"
        elif str(out.dtype) != test["input"]["dtype"]:
            res["status"] = "FAIL"
            res["message"] = f"output dtype {out.dtype} != input dtype {test['input']['dtype']}"
        elif out.dtype.kind != "f":
            res["status"], res["message"] = "FAIL", f"output dtype {out.dtype} is not floating"
        else:
            err = metric_error(group["metric"], out, expected, test)
            res["error"] = err
            if not err <= test["tolerance"]:
                res["status"] = "FAIL"
                res["message"] = f"{group['metric']} error {err:.3g} > tolerance " \
                                 f"{test['tolerance']:.3g}"
        results.append(res)
    return results


def write_outputs(directory, impl, outputs=None) -> dict:
    """Run ``impl(op, reading, G)`` on every case and save ``<name>.out.npy``.

    ``impl`` returns the output array, or None for a case it does not implement (no file is
    written; check with ``--allow-missing`` or select with ``--op``).  Outputs go next to the
    inputs (``directory/cases``) or into ``outputs``; an ``output`` path that would leave
    that folder (absolute, '..', a link out) is a VectorError, checked for every case before
    anything is written.  Returns {name: written?}.
    """
    manifest = load_manifest(directory)
    targets = {test["name"]: output_path(directory, test, outputs)
               for _, test in iter_tests(manifest)}
    written = {}
    for group, test in iter_tests(manifest):
        G = case_array(directory, test, "input")
        out = impl(group["op"], dict(group["reading"]), G)
        written[test["name"]] = out is not None
        if out is None:
            continue
        target = targets[test["name"]]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        replace_file(target, npy_bytes(np.asarray(out)))  # never through a link or FIFO
    return written


def swanref_impl(op, reading, G, backend=None):
    """swanref's own operators as an ``impl`` for :func:`write_outputs` (every reading);
    ``backend`` names one backend (default: the operators' own choice)."""
    rd = dict(reading, backend=backend)
    if op == "grad_norm":
        return api.grad_norm(G, **rd)
    if op == "whiten":
        return api.whiten(G, rd.pop("method"), **rd)
    if op == "swan_update":
        return api.swan_update(G, **rd)
    return api.sinkgd_update(G, **rd)
