"""Golden vectors: the shipped pinned copy, regeneration, and ``swanref check-vectors``."""
from __future__ import annotations

import ast
import io
import json
import os
import shutil
import struct

import numpy as np
import pytest

from swanref.verify import vectors as V
from swanref.spec.readings import SPEC_VERSION, VECTORS_VERSION
from swanref.testing import highprec

import meta_impls as M

SHIPPED = V.SHIPPED


@pytest.fixture(scope="module")
def manifest():
    return V.load_manifest(SHIPPED)


@pytest.fixture
def vecdir(tmp_path):
    """A private copy of the shipped set (outputs get written next to it)."""
    d = tmp_path / "vectors"
    shutil.copytree(SHIPPED, d)
    return str(d)


def _tests(manifest):
    return list(V.iter_tests(manifest))


# -- the shipped copy -------------------------------------------------------------------------

def test_shipped_checksums_match():
    assert V.verify_checksums(SHIPPED) == []


def test_shipped_set_is_small_and_versioned(manifest):
    total = sum(os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(SHIPPED) for f in files)
    assert total < 1_000_000
    # the shipped set carries the spec version it was generated under (VECTORS_VERSION), which
    # SPEC_VERSION may have passed without any operator's value changing
    assert os.path.basename(SHIPPED) == "v" + VECTORS_VERSION
    assert manifest["specVersion"] == VECTORS_VERSION
    assert tuple(map(int, VECTORS_VERSION.split("."))) <= tuple(map(int, SPEC_VERSION.split(".")))
    assert manifest["schema"] == V.SCHEMA
    assert manifest["numberOfTests"] == len(_tests(manifest))
    prov = manifest["provenance"]
    assert prov["generator"] == V.GENERATOR
    assert {"numpy", "scipy", "mpmath", "swanref", "python"} <= set(prov["library_versions"])


def test_shipped_manifest_is_self_describing(manifest):
    ids = [t["tcId"] for _, t in _tests(manifest)]
    assert sorted(ids) == list(range(1, len(ids) + 1))
    names = [t["name"] for _, t in _tests(manifest)]
    assert len(names) == len(set(names))
    for group, test in _tests(manifest):
        assert group["metric"] in V.METRICS and group["metricDefinition"]
        assert set(test["flags"]) <= set(V.FLAGS), test["flags"]
        assert test["result"] == "valid"
        assert test["tolerance"] > 0
        for part in ("input", "expected"):
            arr = np.load(os.path.join(SHIPPED, test[part]["file"]), allow_pickle=False)
            assert list(arr.shape) == test[part]["shape"]
            assert str(arr.dtype) == test[part]["dtype"]
        assert test["output"] == f"cases/{test['name']}.out.npy"


def test_shipped_set_covers_ops_and_adversarial_flags(manifest):
    ops = {g["op"] for g in manifest["testGroups"]}
    assert ops == {"grad_norm", "whiten", "swan_update", "sinkgd_update"}
    flags = set().union(*(t["flags"] for _, t in _tests(manifest)))
    for f in ("ill_conditioned", "rank_deficient", "tall", "batched", "zero", "constant_row",
              "huge_scale", "tiny_scale", "float32", "mpmath_checked", "tiny_variance"):
        assert f in flags, f
    for op in ops:
        per_op = set().union(*(t["flags"] for g, t in _tests(manifest) if g["op"] == op))
        assert {"tall", "batched", "zero"} <= per_op, (op, per_op)


def test_index_tsv_matches_manifest(manifest):
    with open(os.path.join(SHIPPED, "index.tsv")) as fh:
        rows = [ln.rstrip("\n").split("\t") for ln in fh if not ln.startswith("#")]
    by_name = {t["name"]: (g, t) for g, t in _tests(manifest)}
    assert len(rows) == len(by_name)
    for name, op, dtype, shape, fin, fexp, fout, metric, tol, reading in rows:
        g, t = by_name[name]
        assert (op, dtype, fin, fexp, fout, metric) == (
            g["op"], t["input"]["dtype"], t["input"]["file"], t["expected"]["file"],
            t["output"], g["metric"])
        assert [int(s) for s in shape.split("x")] == t["input"]["shape"]
        assert float(tol) == t["tolerance"]
        assert reading == V._reading_text(g["reading"])


def _read_npy_without_numpy(path):
    """The reader docs/verification.md describes: magic, version, header dict, raw data."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:6] == b"\x93NUMPY" and data[6:8] == b"\x01\x00"
    (hlen,) = struct.unpack("<H", data[8:10])
    header = ast.literal_eval(data[10:10 + hlen].decode("latin1"))
    assert (10 + hlen) % 64 == 0
    assert header["fortran_order"] is False
    fmt = {"<f8": "d", "<f4": "f"}[header["descr"]]
    count = 1
    for s in header["shape"]:
        count *= s
    values = struct.unpack("<" + fmt * count, data[10 + hlen:])
    return header["shape"], values


def test_npy_files_are_readable_without_numpy(manifest):
    for _, test in _tests(manifest)[::5]:
        for part in ("input", "expected"):
            path = os.path.join(SHIPPED, test[part]["file"])
            shape, values = _read_npy_without_numpy(path)
            arr = np.load(path)
            assert tuple(shape) == arr.shape
            assert np.array_equal(np.array(values).reshape(shape), arr, equal_nan=True)


def test_mpmath_crosschecks_are_recorded_and_reproduce(manifest):
    checked = [(g, t) for g, t in _tests(manifest) if "mpmath_checked" in t["flags"]]
    assert len(checked) >= 10
    for g, t in checked:
        assert t["crosscheck"]["error_of_float64_reference"] <= t["tolerance"] / 4
        assert t["expected_source"].startswith("mpmath")
    # recompute two of them independently
    for name in ("grad_norm_constant_rows", "whiten_ill_1e6"):
        g, t = next((g, t) for g, t in checked if t["name"] == name)
        G = np.load(os.path.join(SHIPPED, t["input"]["file"]))
        exp = np.load(os.path.join(SHIPPED, t["expected"]["file"]))
        if g["op"] == "grad_norm":
            hp = highprec.grad_norm(G)
        else:
            hp = highprec.polar_factor(G, rank_rtol=max(G.shape) * np.finfo(G.dtype).eps)
        assert V.metric_error(g["metric"], exp, hp, t) <= t["tolerance"] / 4


def test_regeneration_reproduces_the_shipped_copy(tmp_path, manifest):
    out = tmp_path / "regen"
    assert V.main_write([str(out)]) == 0
    regen = V.load_manifest(str(out))
    old = {t["name"]: (g, t) for g, t in _tests(manifest)}
    new = {t["name"]: (g, t) for g, t in _tests(regen)}
    assert old.keys() == new.keys()
    for name, (g, t) in old.items():
        g2, t2 = new[name]
        assert g2["op"] == g["op"] and g2["reading"] == g["reading"]
        assert t2["flags"] == t["flags"]
        Gi = np.load(os.path.join(SHIPPED, t["input"]["file"]))
        Gi2 = np.load(str(out / t2["input"]["file"]))
        assert Gi.dtype == Gi2.dtype
        np.testing.assert_allclose(Gi2, Gi, rtol=1e-12, atol=0)
        E = np.load(os.path.join(SHIPPED, t["expected"]["file"]))
        E2 = np.load(str(out / t2["expected"]["file"]))
        assert V.metric_error(g["metric"], E2, E, t) <= t["tolerance"], name
        # tolerances depend on kappa and singular values from this machine's LAPACK; another
        # LAPACK build moved one by 2% on the GPU machine, so allow 5%
        assert t2["tolerance"] == pytest.approx(t["tolerance"], rel=0.05)


# -- check-vectors -----------------------------------------------------------------------------

def test_swanref_outputs_pass(vecdir, capsys):
    V.write_outputs(vecdir, V.swanref_impl)
    assert V.main_check([vecdir]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "0 missing" in out


def test_outputs_in_separate_directory_and_json(vecdir, tmp_path, capsys):
    outs = tmp_path / "outs"
    V.write_outputs(vecdir, V.swanref_impl, outputs=str(outs))
    assert V.main_check([vecdir, "--outputs", str(outs), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] and d["counts"]["pass"] == d["counts"]["pass"] + d["counts"]["FAIL"]


def _impl_with(op_name, fn):
    def impl(op, reading, G):
        if op != op_name:
            return None
        return fn(G)
    return impl


def test_missing_outputs_fail_unless_allowed(vecdir, capsys):
    V.write_outputs(vecdir, lambda op, rd, G: V.swanref_impl(op, rd, G)
                    if op == "sinkgd_update" else None)
    assert V.main_check([vecdir]) == 1
    assert V.main_check([vecdir, "--allow-missing"]) == 0
    assert V.main_check([vecdir, "--op", "sinkgd_update"]) == 0
    assert V.main_check([vecdir, "--op", "grad_norm"]) == 1


def test_wrong_implementation_fails_naming_the_case(vecdir, capsys):
    def ddof1(op, rd, G):
        if op == "grad_norm" and rd == {"axis": -1, "eps": 0.0}:
            return M.grad_norm_ddof1(G)
        return None
    V.write_outputs(vecdir, ddof1)
    assert V.main_check([vecdir, "--allow-missing"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] grad_norm_basic" in out


@pytest.mark.parametrize("mutate,needle", [
    (lambda X: X.astype(np.float32) if X.dtype == np.float64 else X.astype(np.float64),
     "dtype"),
    (lambda X: X[..., :1], "shape"),
    (lambda X: np.full_like(X, np.nan), "error inf"),
    (lambda X: X + 1e-6, "error"),
])
def test_bad_outputs_fail(vecdir, capsys, mutate, needle):
    def impl(op, rd, G):
        if op != "whiten":
            return None
        return mutate(V.swanref_impl(op, rd, G))
    V.write_outputs(vecdir, impl)
    assert V.main_check([vecdir, "--op", "whiten", "--case", "whiten_basic"]) == 1
    assert needle in capsys.readouterr().out


def test_exact_zero_handling(vecdir, capsys):
    """NaN for a zero input is an infinite error, not a pass."""
    def impl(op, rd, G):
        out = V.swanref_impl(op, rd, G)
        return np.full_like(out, np.nan) if not np.any(G) else out
    V.write_outputs(vecdir, impl)
    assert V.main_check([vecdir]) == 1
    assert "[FAIL] whiten_zero" in capsys.readouterr().out


def test_corrupted_set_exits_2(vecdir, capsys):
    path = os.path.join(vecdir, "cases", "whiten_basic.in.npy")
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 1
    open(path, "wb").write(bytes(data))
    V.write_outputs(vecdir, V.swanref_impl)
    assert V.main_check([vecdir]) == 2
    assert "whiten_basic.in.npy" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["/no/such/dir"], "no such directory"),
    ([], "required"),
    (["SHIPPED", "--op", "frobnicate"], "unknown --op"),
    (["SHIPPED", "--case", "nope"], "unknown --case"),
    (["SHIPPED", "--outputs", "/no/such/dir"], "no such directory"),
    (["SHIPPED", "--bogus"], "unrecognized"),
    (["SHIPPED", "--dtype", "float16"], "no case matches"),
])
def test_check_vectors_usage_errors_exit_2(argv, needle, capsys):
    argv = [SHIPPED if a == "SHIPPED" else a for a in argv]
    assert V.main_check(argv) == 2
    assert needle in capsys.readouterr().err


def test_directory_without_manifest_exits_2(tmp_path, capsys):
    assert V.main_check([str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_vectors_refuses_non_empty_outdir(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert V.main_write([str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert V.main_write([]) == 2


def test_shipped_alias(capsys):
    # 'shipped' names the packaged copy; no outputs there, so every case is missing, and a
    # run that checked nothing is not a pass
    assert V.main_check(["shipped", "--allow-missing", "--op", "grad_norm"]) == 1
    out = capsys.readouterr()
    assert "missing" in out.out and "nothing checked" in out.err


# -- hostile vector sets: paths confined, sizes checked, malformed sets exit 2 -----------------

def _reseal(vecdir, manifest=None):
    """Rewrite manifest.json (if given) and every digest, so only the planted fault remains."""
    mpath = os.path.join(vecdir, "manifest.json")
    if manifest is not None:
        for g in manifest.get("testGroups") or []:
            for t in g.get("tests") or []:
                for part in ("input", "expected"):
                    if not isinstance(t.get(part), dict) or "file" not in t[part]:
                        continue
                    f = os.path.join(vecdir, str(t[part]["file"]))
                    if os.path.isfile(f) and os.path.getsize(f) < 1 << 20:
                        t[part]["sha256"] = V._sha256(open(f, "rb").read())
        with open(mpath, "w") as fh:
            json.dump(manifest, fh)
    lines = []
    for root, _, files in os.walk(vecdir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, vecdir)
            if rel != "SHA256SUMS" and not name.endswith(".out.npy") and \
                    os.path.getsize(path) < 1 << 20:
                lines.append(f"{V._sha256(open(path, 'rb').read())}  {rel}")
    with open(os.path.join(vecdir, "SHA256SUMS"), "w") as fh:
        fh.write("\n".join(sorted(lines, key=lambda s: s[66:])) + "\n")


def _manifest(vecdir):
    return json.load(open(os.path.join(vecdir, "manifest.json")))


def _first_test(m):
    return m["testGroups"][0]["tests"][0]


def _exit_2_one_line(argv, capsys, needle):
    assert V.main_check(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.parametrize("bad", ["../escaped.npy", "/tmp/swanref-escaped/x.npy"])
def test_write_outputs_confines_output_paths(vecdir, tmp_path, bad):
    """A crafted 'output' overwrote a file outside the set and created absolute directories."""
    m = _manifest(vecdir)
    _first_test(m)["output"] = bad
    _reseal(vecdir, m)
    victim = os.path.join(os.path.dirname(vecdir), "escaped.npy")
    with pytest.raises(V.VectorError, match="absolute|leaves"):
        V.write_outputs(vecdir, V.swanref_impl)
    assert not os.path.exists(victim) and not os.path.exists("/tmp/swanref-escaped")
    assert not any(n.endswith(".out.npy") for n in os.listdir(os.path.join(vecdir, "cases")))


def test_write_outputs_refuses_a_link_out_of_the_set(vecdir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(vecdir, "cases", "link"))
    m = _manifest(vecdir)
    _first_test(m)["output"] = "cases/link/x.out.npy"
    _reseal(vecdir, m)
    with pytest.raises(V.VectorError, match="outside"):
        V.write_outputs(vecdir, V.swanref_impl)
    assert not list(outside.iterdir())


@pytest.mark.parametrize("line,needle", [
    ("{}  ../outside.txt", "leaves"),
    ("{}  /etc/hostname", "absolute"),
    ("{}  cases/link_out", "outside"),
    ("no separator here", "expected '<sha256>  <path>'"),
])
def test_check_vectors_confines_sha256sums_paths(vecdir, tmp_path, capsys, line, needle):
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", os.path.join(vecdir, "cases", "link_out"))
    with open(os.path.join(vecdir, "SHA256SUMS"), "a") as fh:
        fh.write(line.format("0" * 64) + "\n")
    _exit_2_one_line([vecdir, "--allow-missing"], capsys, needle)


@pytest.mark.parametrize("part", ["input", "expected"])
@pytest.mark.parametrize("bad,needle", [("../../x.npy", "leaves"), ("/etc/hostname", "absolute"),
                                        ("", "non-empty relative path")])
def test_check_vectors_confines_manifest_paths(vecdir, capsys, part, bad, needle):
    m = _manifest(vecdir)
    _first_test(m)[part]["file"] = bad
    _reseal(vecdir, m)
    _exit_2_one_line([vecdir, "--allow-missing"], capsys, needle)


def test_huge_file_is_refused_unread(vecdir, capsys):
    """A 3 GiB sparse file named in SHA256SUMS gave a MemoryError traceback."""
    path = os.path.join(vecdir, "cases", "huge.bin")
    with open(path, "wb") as fh:
        fh.truncate(3 << 30)  # sparse: no disk used
    with open(os.path.join(vecdir, "SHA256SUMS"), "a") as fh:
        fh.write(f"{'0' * 64}  cases/huge.bin\n")
    _exit_2_one_line([vecdir, "--allow-missing"], capsys, "limit")


def _npy_header(descr, shape):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape})
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


@pytest.mark.parametrize("part", ["input", "expected"])
@pytest.mark.parametrize("kind", ["pickle", "huge_shape", "garbage", "shape_mismatch"])
def test_malformed_npy_in_the_set_exits_2(vecdir, capsys, part, kind):
    m = _manifest(vecdir)
    t = _first_test(m)
    path = os.path.join(vecdir, t[part]["file"])
    if kind == "pickle":
        buf = io.BytesIO()
        np.save(buf, np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
        data = buf.getvalue()
    elif kind == "huge_shape":
        data = _npy_header("<f8", (10 ** 6, 10 ** 6)) + b"\0" * 64
    elif kind == "garbage":
        data = b"not an npy file at all"
    else:
        data = V._npy_bytes(np.zeros((2, 2)))
    open(path, "wb").write(data)
    _reseal(vecdir, m)
    _exit_2_one_line([vecdir, "--allow-missing"], capsys, os.path.basename(path))


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: _first_test(m).__setitem__("tolerance", "1e-3"), "tolerance must be"),
    # NaN is not JSON: refused by the reader before the field checks (spec 6.7)
    (lambda m: _first_test(m).__setitem__("tolerance", float("nan")), "NaN is not allowed"),
    (lambda m: _first_test(m).pop("expected"), "expected must be an object"),
    (lambda m: _first_test(m)["input"].pop("dtype"), "has no 'dtype'"),
    (lambda m: _first_test(m).pop("name"), "name must be"),
    (lambda m: _first_test(m)["input"].__setitem__("shape", [10 ** 9, 10 ** 9]), "entries"),
    (lambda m: _first_test(m)["input"].__setitem__("shape", "3x4"), "shape must be"),
    (lambda m: _first_test(m)["input"].__setitem__("dtype", "object"), "dtype must be"),
    (lambda m: m["testGroups"][0].__setitem__("op", "rm -rf"), "op must be one of"),
    (lambda m: m["testGroups"][0].__setitem__("tests", {}), "tests must be a list"),
    (lambda m: m.__setitem__("testGroups", None), "testGroups must be a list"),
    (lambda m: m["testGroups"][1]["tests"].append(_first_test(m)), "duplicate"),
])
def test_malformed_manifest_exits_2(vecdir, capsys, mutate, needle):
    m = _manifest(vecdir)
    mutate(m)
    _reseal(vecdir, m)
    _exit_2_one_line([vecdir, "--allow-missing"], capsys, needle)


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"schema": ' * 50000 + "1",
                                  "\xff\xfe not utf-8", "[]"])
def test_unparsable_manifest_exits_2(vecdir, capsys, text):
    with open(os.path.join(vecdir, "manifest.json"), "wb") as fh:
        fh.write(text.encode("latin-1"))
    _exit_2_one_line([vecdir], capsys, "manifest.json")


@pytest.mark.parametrize("kind", ["pickle", "huge_shape", "garbage", "truncated_npz", "npz",
                                  "fifo"])
def test_malformed_output_is_a_failed_case(vecdir, capsys, kind):
    V.write_outputs(vecdir, V.swanref_impl)
    t = _first_test(_manifest(vecdir))
    path = os.path.join(vecdir, t["output"])
    out = V.swanref_impl(_group_of(vecdir, t)["op"], dict(_group_of(vecdir, t)["reading"]),
                         np.load(os.path.join(vecdir, t["input"]["file"])))
    if kind == "pickle":
        np.save(path, np.array([[None]], dtype=object), allow_pickle=True)
    elif kind == "huge_shape":
        open(path, "wb").write(_npy_header("<f8", (10 ** 6, 10 ** 6)) + b"\0" * 64)
    elif kind in ("npz", "truncated_npz"):
        # issue 23: a truncated .npz gave a zipfile.BadZipFile traceback
        buf = io.BytesIO()
        np.savez(buf, out=out)
        data = buf.getvalue()
        open(path, "wb").write(data[: len(data) // 2] if kind == "truncated_npz" else data)
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.unlink(path)
        os.mkfifo(path)  # reading it would block forever
    else:
        open(path, "wb").write(b"\x93NUMPY garbage")
    assert V.main_check([vecdir]) == 1
    text = capsys.readouterr().out
    assert f"[FAIL] {t['name']}: " in text and "Traceback" not in text
    if kind != "fifo":  # a FIFO is not a file: "no output file"
        assert f"[FAIL] {t['name']}: cannot read output" in text


def _group_of(vecdir, test):
    return next(g for g, t in V.iter_tests(_manifest(vecdir)) if t["name"] == test["name"])


def test_big_endian_output_passes(vecdir, capsys):
    """issue 23: a correct output saved big-endian ('>f8') was marked FAIL (dtype '>f8' !=
    'float64'); the byte order is a storage detail, the numbers are the same."""
    V.write_outputs(vecdir, V.swanref_impl)
    m = _manifest(vecdir)
    for _, test in V.iter_tests(m):
        p = os.path.join(vecdir, test["output"])
        arr = np.load(p)
        np.save(p, arr.astype(arr.dtype.newbyteorder(">")))
        assert np.load(p).dtype.byteorder == ">"
    assert V.main_check([vecdir]) == 0
    assert "0 failed" in capsys.readouterr().out
