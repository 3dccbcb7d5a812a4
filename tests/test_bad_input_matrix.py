"""The bad-input matrix: operators x backends x input classes (docs/spec.md section 6).

Every cell asserts the documented outcome: either the documented error type and message, or a
finite result equal to the operator on the equivalent plain input -- and in both cases the
input is not mutated and the output does not alias it.  Inputs are 3 x 5 so the whole matrix
runs in a few seconds.  The cells that could crash a compiled backend (misaligned buffers) run
in a subprocess; the rest run in-process.  The tests at the end pin each hostile-input finding
of the audit that led to this file (hangs, silent zeros, masked arrays, byte order, subclasses,
keyword errors, target loading).
"""
from __future__ import annotations

import copy
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import swanref
from swanref import presets
from swanref.backends import registry
from swanref.spec.validate import MAX_ITERATIONS

HERE = os.path.dirname(os.path.abspath(__file__))
# np.matrix is one of the input classes on purpose
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

# -- operators ----------------------------------------------------------------------------------

OPS = {
    "grad_norm": lambda G, **kw: swanref.grad_norm(G, **kw),
    "whiten_svd": lambda G, **kw: swanref.whiten(G, "svd", **kw),
    "whiten_eigh": lambda G, **kw: swanref.whiten(G, "eigh", **kw),
    "whiten_newton_schulz": lambda G, **kw: swanref.whiten(G, "newton_schulz", **kw),
    "whiten_nsds": lambda G, **kw: swanref.whiten(G, "nsds", **kw),
    "whiten_preset": lambda G, **kw: swanref.whiten(G, "muon_ns5", **kw),
    "swan_update": lambda G, **kw: swanref.swan_update(G, **kw),
    "sinkgd_update": lambda G, **kw: swanref.sinkgd_update(G, **kw),
    # the other public entry points that take arrays: the presets' transcriptions called
    # directly (NumPy only, no backend argument) and the update of spec 9 (N-D parameters: a
    # 3-D input is a stack of matrices here)
    "presets_whiten_preset": lambda G, backend=None, **kw: presets.whiten_preset(
        G, "muon_ns5", **kw),
    "presets_run_preset": lambda G, backend=None, **kw: presets.run_preset(
        G, presets.get_preset("muon_ns5"), presets.schedule("muon_ns5"), **kw),
    "orthogonalized_update": lambda G, **kw: swanref.orthogonalized_update(
        G, "muon_ns5", stack_dims=max(getattr(G, "ndim", 2) - 2, 0), **kw),
}
#: entry points without a backend argument: one cell per input class (the reference column)
NO_BACKEND = {"presets_whiten_preset", "presets_run_preset"}
#: presets add eps to the norm (docs/presets.md): not scale invariant for tiny input
#: (orthogonalized_update scales by a power of two first, spec 9.5)
NOT_SCALE_INVARIANT_SMALL = {"whiten_preset", "presets_whiten_preset", "presets_run_preset"}

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not registry.is_available(name), reason=f"backend {name!r} not available here"))
    for name in registry.names()]


def _base(dtype=np.float64):
    """A fixed well-conditioned 3 x 5 matrix with distinct rows (no constant row)."""
    G = np.random.default_rng(20240614).standard_normal((3, 5)) + np.eye(3, 5)
    return G.astype(dtype)


def _misaligned(G):
    """``G``'s values in a buffer whose data pointer is not a multiple of the item size."""
    buf = bytearray(G.nbytes + 1)
    out = np.frombuffer(buf, dtype=G.dtype, count=G.size, offset=1).reshape(G.shape)
    out[...] = G
    assert not out.flags.aligned
    return out


# -- input classes --------------------------------------------------------------------------------
# Each class maps an op name to (G, expectation); an expectation is ("error", type, regex) or
# ("same_as", G_equivalent): a finite result equal to the op on G_equivalent, a plain
# C-contiguous native-endian float array holding the same values.

def _err(exc, match):
    return ("error", exc, match)


def _scaled(k, dtype=np.float64):
    """(G * 2**k, G * 2**k * 2**-k): exact power-of-two scaling, the values it really holds."""
    G = np.ldexp(_base(dtype), k)
    return G, np.ldexp(G, -k)


def _c_empty(op):
    return np.array([]), _err(ValueError, "at least 2 dimensions")


def _c_zero_rows(op):
    return np.ones((0, 5)), _err(ValueError, "empty matrix dimension")


def _c_one_d(op):
    return np.ones(5), _err(ValueError, "at least 2 dimensions")


def _c_zero_d(op):
    return np.float64(1.5), _err(ValueError, "at least 2 dimensions")


def _c_int(op):
    return np.arange(15).reshape(3, 5), _err(TypeError, "unsupported dtype int")


def _c_bool(op):
    return np.ones((3, 5), bool), _err(TypeError, "unsupported dtype bool")


def _c_object(op):
    return _base().astype(object), _err(TypeError, "dtype object")


def _c_string(op):
    return np.full((3, 5), "a"), _err(TypeError, "unsupported dtype")


def _c_nan(op):
    G = _base()
    G[1, 2] = np.nan
    return G, _err(ValueError, "non-finite")


def _c_inf(op):
    G = _base()
    G[0, 0] = -np.inf
    return G, _err(ValueError, "non-finite")


def _c_huge64(op):
    G, same = _scaled(990)          # entries ~1e298: squares overflow float64
    return G, ("same_as", np.ldexp(same, 0 if op not in NOT_SCALE_INVARIANT_SMALL else 40))


def _c_huge32(op):
    G, same = _scaled(122, np.float32)   # entries ~1e37: squares overflow float32
    return G, ("same_as", np.ldexp(same, 0 if op not in NOT_SCALE_INVARIANT_SMALL else 40))


def _c_tiny64(op):
    G, same = _scaled(-990)
    return G, ("same_as", G if op in NOT_SCALE_INVARIANT_SMALL else same)


def _c_denormal64(op):
    G, same = _scaled(-1050)          # subnormal: ~24 significant bits survive
    return G, ("same_as", G if op in NOT_SCALE_INVARIANT_SMALL else same)


def _c_denormal32(op):
    G, same = _scaled(-135, np.float32)
    return G, ("same_as", G if op in NOT_SCALE_INVARIANT_SMALL else same)


def _c_big_endian64(op):
    G = _base()
    return G.astype(">f8"), ("same_as", G)


def _c_big_endian32(op):
    G = _base(np.float32)
    return G.astype(">f4"), ("same_as", G)


def _c_non_contiguous(op):
    big = np.zeros((6, 10))
    big[::2, ::2] = _base()
    return big[::2, ::2], ("same_as", _base())


def _c_fortran(op):
    return np.asfortranarray(_base()), ("same_as", _base())


def _c_negative_strides(op):
    G = _base()[::-1, ::-1]
    return G, ("same_as", np.ascontiguousarray(G))


def _c_misaligned(op):
    return _misaligned(_base()), ("same_as", _base())


def _c_read_only(op):
    G = _base()
    G.flags.writeable = False
    return G, ("same_as", _base())


def _c_matrix(op):
    return np.matrix(_base()), ("same_as", _base())


def _c_masked(op):
    return np.ma.masked_array(_base(), mask=np.eye(3, 5, dtype=bool)), \
        _err(TypeError, "masked array")


def _c_masked_nan(op):
    G = _base()
    G[1, 1] = np.nan
    return np.ma.masked_invalid(G), _err(TypeError, "masked array")


def _c_list(op):
    return _base().tolist(), ("same_as", _base())


def _c_ragged_list(op):
    return [[1.0, 2.0], [3.0]], _err(TypeError, "must be an array")


def _c_batched_zero(op):
    return np.ones((0, 3, 5)), ("same_as", np.ones((0, 3, 5)))


CLASSES = {name[3:]: fn for name, fn in dict(globals()).items() if name.startswith("_c_")}
# complex input is left out here: its policy belongs to whoever owns complex support, and
# tests/test_input_policy.py pins it
#: cells that could crash a compiled backend: run in a subprocess
SUBPROCESS = {"misaligned"}


def _fingerprint(G):
    """Everything about G a call could change (values, mask, layout, flags)."""
    if isinstance(G, np.ndarray):
        raw = G.view(np.ndarray)
        data = repr(raw.tolist()) if raw.dtype == object else raw.tobytes()
        mask = np.ma.getmaskarray(G).tobytes() if isinstance(G, np.ma.MaskedArray) else None
        return (type(G), raw.dtype.str, raw.shape, raw.strides, data, mask,
                raw.flags.writeable)
    return (type(G), repr(G))


def run_case(backend: str, op: str, cls: str) -> None:
    """One cell of the matrix (also called from the subprocess)."""
    G, expect = CLASSES[cls](op)
    before = _fingerprint(G)
    kept = copy.copy(G)
    if expect[0] == "error":
        _, exc, match = expect
        with pytest.raises(exc, match=match):
            OPS[op](G, backend=backend)
    else:
        out = OPS[op](G, backend=backend)
        plain = expect[1]
        assert type(out) is np.ndarray, type(out)
        assert out.shape == plain.shape and out.dtype == plain.dtype.newbyteorder("="), \
            (out.shape, out.dtype)
        assert out.dtype.isnative
        assert np.isfinite(out).all()
        ref = OPS[op](plain, backend=backend)
        # the same values in another layout, byte order or scale (exact powers of two): only
        # the association of a BLAS reduction may differ, a few ulps of an O(1) result of a
        # well-conditioned 3 x 5 matrix
        tol = 32 * np.finfo(out.dtype).eps
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol, err_msg=f"{backend} {op} {cls}")
        if isinstance(G, np.ndarray):
            assert not np.shares_memory(out, G)
    assert _fingerprint(G) == before, "input mutated"
    if not isinstance(G, np.ndarray):
        assert G == kept


def _cells(rows):
    """pytest params ``backend-op-rest``: every available backend for an op that takes one,
    the reference column alone for the others; a backend missing here is a clean skip."""
    out = []
    for backend in registry.names():
        skip = pytest.mark.skipif(not registry.is_available(backend),
                                  reason=f"backend {backend!r} not available here")
        for op, *rest in rows:
            if op in NO_BACKEND and backend != "reference":
                continue
            out.append(pytest.param(backend, op, *rest, marks=skip,
                                    id="-".join(map(str, (backend, op, *rest)))))
    return out


@pytest.mark.parametrize("backend,op,cls", _cells(
    [(op, cls) for op in OPS for cls in sorted(set(CLASSES) - SUBPROCESS)]))
def test_matrix(backend, op, cls):
    run_case(backend, op, cls)


def test_matrix_crash_prone_cells_in_a_subprocess():
    """Misaligned buffers, every op and backend, in a child process: a crash fails one test."""
    cells = [(b, op, c) for b in registry.available() for op in OPS for c in sorted(SUBPROCESS)
             if b == "reference" or op not in NO_BACKEND]
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("bad_input_matrix", {__file__!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        for cell in {cells!r}:
            mod.run_case(*cell)
            print("ok", *cell)
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    # cwd outside the checkout: the source tree's swanref has no compiled core
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True,
                       text=True, timeout=120,
                       env=env, cwd=tempfile.gettempdir())
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    assert r.stdout.count("ok ") == len(cells)


# -- invalid keywords ----------------------------------------------------------------------------

BIG = 10 ** 9
KEYWORDS = {
    "grad_norm": [({"axis": 5}, ValueError, "axis must name"), ({"axis": 1.5}, TypeError, "axis"),
                  ({"eps": -1.0}, ValueError, "eps must be >= 0"),
                  ({"eps": np.nan}, ValueError, "eps must be finite"),
                  ({"method": "svd"}, TypeError, "unexpected keyword argument 'method'")],
    "whiten_svd": [({"steps": 3}, ValueError, "steps does not apply"),
                   ({"rank_rtol": -1.0}, ValueError, "rank_rtol must be >="),
                   ({"rank_rtol": 1.0}, ValueError, "rank_rtol must be < 1")],
    "whiten_eigh": [({"beta": 0.5}, ValueError, "beta does not apply"),
                    ({"rank_rtol": 1e308}, ValueError, "rank_rtol must be < 1")],
    "whiten_newton_schulz": [({"steps": BIG}, ValueError, f"steps must be <= {MAX_ITERATIONS}"),
                             ({"steps": 2 ** 63}, ValueError, "steps must be <="),
                             ({"steps": -1}, ValueError, "steps must be >= 0"),
                             ({"steps": 2.0}, TypeError, "steps must be an integer"),
                             ({"beta": 0.0}, ValueError, "beta must be >"),
                             ({"scaling": "spectral"}, ValueError, "scaling must be one of"),
                             ({"on_divergence": "retry"}, ValueError, "on_divergence"),
                             ({"step": 3}, TypeError, "did you mean 'steps'")],
    "whiten_nsds": [({"steps": BIG}, ValueError, "steps must be <="),
                    ({"steps": 2 ** 63}, ValueError, "steps must be <=")],
    "whiten_preset": [({"steps": BIG}, ValueError, "steps must be <="),
                      ({"steps": 2 ** 63}, ValueError, "steps must be <="),
                      ({"beta": 0.5}, ValueError, "beta does not apply"),
                      ({"emulate": "fp8"}, ValueError, "emulate must be one of"),
                      ({"emulate": np.array(["bfloat16", "float16"])}, ValueError,
                       "emulate must be one of")],
    "swan_update": [({"method": "svd"}, TypeError, "did you mean 'whiten_method'"),
                    ({"whiten_method": ["svd"]}, TypeError, "whiten_method must be a string"),
                    ({"steps": BIG}, ValueError, "steps must be <="),
                    ({"lr": np.nan}, ValueError, "lr must be finite"),
                    ({"lr": "fast"}, TypeError, "lr must be a real number")],
    "sinkgd_update": [({"iters": BIG}, ValueError, f"iters must be <= {MAX_ITERATIONS}"),
                      ({"iters": 2 ** 63}, ValueError, "iters must be <="),
                      ({"iters": -1}, ValueError, "iters must be >= 0"),
                      ({"iters": 2.0}, TypeError, "iters must be an integer"),
                      ({"lr": np.inf}, ValueError, "lr must be finite"),
                      ({"steps": 3}, TypeError, "did you mean 'iters'")],
    "presets_whiten_preset": [({"steps": BIG}, ValueError, "steps must be <="),
                              ({"steps": 2 ** 63}, ValueError, "steps must be <="),
                              ({"steps": 2.0}, TypeError, "steps must be an integer"),
                              ({"emulate": "fp8"}, ValueError, "emulate must be one of"),
                              ({"emulate": ["bfloat16"]}, ValueError, "emulate must be one of"),
                              ({"step": 3}, TypeError, "did you mean 'steps'"),
                              ({"check_finit": True}, TypeError,
                               "did you mean 'check_finite'"),
                              ({"coefficients": [(1.0, "x", 2.0)]}, TypeError, "coefficients")],
    "presets_run_preset": [({"emulate": "fp8"}, ValueError, "emulate must be one of"),
                           ({"check_finit": True}, TypeError, "did you mean 'check_finite'")],
    "orthogonalized_update": [({"steps": BIG}, ValueError, "steps must be <="),
                              ({"scale": "huge"}, ValueError, "scale"),
                              ({"scale_factor": np.nan}, ValueError, "scale_factor"),
                              ({"stack_dims": -1}, TypeError, "stack_dims"),
                              ({"emulate": "fp8"}, ValueError, "emulate must be one of"),
                              ({"method": "svd"}, TypeError, "unexpected keyword argument"),
                              ({"row_norm": "yes"}, TypeError, "row_norm must be True or False"),
                              ({"row_norm": 1}, TypeError, "row_norm must be True or False")],
}
#: a boolean keyword takes True/False (or a NumPy bool) only: truthy strings, numbers and arrays
#: are TypeErrors naming the keyword (spec 6.6)
NOT_BOOLS = ["no", 0.5, 0, 1, None, np.array([1, 0]), np.array(True), [True]]
for _op in KEYWORDS:
    KEYWORDS[_op] += [({"check_finite": v}, TypeError, "check_finite must be True or False")
                      for v in NOT_BOOLS]
KEYWORDS["swan_update"] += [({"rescale": v}, TypeError, "rescale must be True or False")
                            for v in NOT_BOOLS]
KEYWORD_CASES = [(op, i) for op, cases in KEYWORDS.items() for i in range(len(cases))]


@pytest.mark.parametrize("backend,op,i", _cells(KEYWORD_CASES))
def test_invalid_keywords(backend, op, i):
    kwargs, exc, match = KEYWORDS[op][i]
    G = _base()
    before = G.copy()
    with pytest.raises(exc, match=match):
        OPS[op](G, backend=backend, **kwargs)
    np.testing.assert_array_equal(G, before)


@pytest.mark.parametrize("op", sorted(set(OPS) - NO_BACKEND))
def test_backend_must_be_a_name(op):
    with pytest.raises(TypeError, match="backend must be None or a backend name"):
        OPS[op](_base(), backend=["cpp"])


def test_whiten_method_must_be_a_string():
    with pytest.raises(TypeError, match="method must be a string"):
        swanref.whiten(_base(), ["svd"])


# -- one test per finding -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_step_counts_raise_before_any_work(backend):
    """steps=10**9 (and 2**63) used to loop for hours, ignoring Ctrl-C, or dump pybind errors;
    muon_ns5 with steps=10**9 built a 1e9-entry schedule tuple."""
    G = _base()
    t = time.perf_counter()
    for method in ("newton_schulz", "nsds", "muon_ns5", "cubic"):
        for steps in (MAX_ITERATIONS + 1, BIG, 2 ** 63, 2 ** 64 + 1):
            with pytest.raises(ValueError, match="steps must be <="):
                swanref.whiten(G, method, steps=steps, backend=backend)
    for iters in (BIG, 2 ** 63):
        with pytest.raises(ValueError, match="iters must be <="):
            swanref.sinkgd_update(G, iters=iters, backend=backend)
    with pytest.raises(ValueError, match="steps must be <="):
        swanref.swan_update(G, steps=BIG, backend=backend)
    assert time.perf_counter() - t < 5  # generous: each is a range check


def test_presets_schedule_is_bounded():
    from swanref import presets
    with pytest.raises(ValueError, match="steps must be <="):
        presets.schedule("muon_ns5", BIG)
    assert len(presets.schedule("muon_ns5", MAX_ITERATIONS)) == MAX_ITERATIONS


def test_reference_backend_rejects_unbounded_counts_itself():
    from swanref.backends import reference
    G = _base()
    with pytest.raises(ValueError, match="steps must be <="):
        reference.whiten_newton_schulz(G, 2 ** 63, 0.5, "gram_fro")
    with pytest.raises(ValueError, match="iters must be <="):
        reference.sinkgd(G, 2 ** 63)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="POSIX signals")
def test_long_runs_stop_on_ctrl_c():
    """The longest allowed run is interruptible on every CPU backend: SIGINT -> KeyboardInterrupt
    within a second (it used to run on for minutes after Ctrl-C)."""
    code = textwrap.dedent("""
        import signal, sys, numpy as np, swanref
        # a user's interpreter: Ctrl-C raises KeyboardInterrupt (a child inherits an ignored or
        # blocked SIGINT from whatever ran before in the test process)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        G = np.random.default_rng(0).standard_normal((96, 128))  # seconds per run, even loaded
        for be in sys.argv[1:]:
            swanref.whiten(G[:2, :3], "newton_schulz", backend=be)   # load the backend first
            print("start", be, flush=True)
            try:
                swanref.whiten(G, "newton_schulz", steps=%d, backend=be, on_divergence="ignore")
                print("finished", be, flush=True)
            except KeyboardInterrupt:
                print("interrupted", be, flush=True)
    """ % MAX_ITERATIONS)
    backends = [b for b in ("reference", "cpp") if registry.is_available(b)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    # cwd outside the checkout: `python -c` puts the working directory first on sys.path, and
    # the source tree's swanref has no compiled core (the installed one has)
    p = subprocess.Popen([sys.executable, "-c", code, *backends], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
    try:
        for be in backends:
            assert p.stdout.readline().split() == ["start", be]
            time.sleep(0.3)
            t = time.perf_counter()
            p.send_signal(signal.SIGINT)
            line = p.stdout.readline().split()
            assert line == ["interrupted", be], (line, p.stderr.read() if p.poll() else "")
            assert time.perf_counter() - t < 5
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


PRESETS_ISSUE = ("muon_ns5", "torch_muon", "polar_express", "cubic", "optax_muon")


@pytest.mark.parametrize("preset", PRESETS_ISSUE)
def test_large_float32_presets_agree_across_backends(preset):
    """The reference summed float32 squares in float32: 0.0 everywhere vs 0.84 on cpp."""
    G = np.full((6, 10), 1e19, np.float32) + 1e18 * np.eye(6, 10, dtype=np.float32)
    ref = swanref.whiten(G, preset, backend="reference")
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0.5
    # the float64 run of the same preset on the same values (scale-invariant: eps is
    # negligible next to ||G||_F ~ 8e19)
    want = swanref.whiten(G.astype(np.float64), preset, backend="reference")
    np.testing.assert_allclose(ref, want, atol=2e-5)  # float32 round-off (as test_cpp_presets)
    for be in registry.available():
        if be != "reference":
            np.testing.assert_allclose(swanref.whiten(G, preset, backend=be), ref, atol=2e-5)


@pytest.mark.parametrize("dtype,k", [(np.float64, 996), (np.float32, 122)])
@pytest.mark.parametrize("preset", PRESETS_ISSUE + ("jiacheng6", "polar_express_nanogpt"))
def test_presets_on_huge_input_are_not_silent_zeros(preset, dtype, k):
    """|G| ~ 1e300 (float64) / 1e37 (float32) gave all zeros: the norm's squares overflowed."""
    G = _base(dtype)
    big = np.ldexp(G, k)
    want = swanref.whiten(np.ldexp(G, 40), preset, backend="reference")  # eps negligible
    for be in registry.available():
        if be == "cupy" and preset == "jiacheng6":
            # the GPU runs the to-wide Keller-form presets only; jiacheng6 (to-tall, right
            # multiplication) is refused there with a clear error
            with pytest.raises(ValueError, match="runs on NumPy arrays only"):
                swanref.whiten(big, preset, backend=be)
            continue
        out = swanref.whiten(big, preset, backend=be)
        assert out.dtype == dtype and np.isfinite(out).all()
        np.testing.assert_allclose(out, want, atol=32 * np.finfo(dtype).eps, err_msg=be)


@pytest.mark.parametrize("emulate", ["bfloat16", "source"])
def test_presets_emulated_on_huge_float64_input_are_finite(emulate):
    """The prescale happens before the cast to the emulated format (bf16 has float32's range)."""
    G = _base()
    for preset in ("muon_ns5", "nemo_polar_express", "jiacheng6"):
        out = swanref.whiten(np.ldexp(G, 996), preset, emulate=emulate)
        want = swanref.whiten(np.ldexp(G, 40), preset, emulate=emulate)
        np.testing.assert_array_equal(out, want, err_msg=preset)


def test_presets_direct_call_prescales_huge_input_too():
    from swanref import presets
    G = _base()
    np.testing.assert_allclose(presets.whiten_preset(np.ldexp(G, 1000), "muon_ns5"),
                               presets.whiten_preset(np.ldexp(G, 40), "muon_ns5"),
                               atol=32 * np.finfo(float).eps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
def test_masked_arrays_are_rejected_even_with_hidden_nan_inf(backend, op):
    """Masked NaN/Inf skipped the finite check (LAPACK failures, zeros, wrong numbers); finite
    masked input gave reference and cpp GradNorm results 1.82 apart."""
    for bad in (np.nan, np.inf, 0.0):
        G = _base()
        G[0, 1] = bad
        M = np.ma.masked_array(G, mask=G == bad)
        with pytest.raises(TypeError, match="masked array"):
            OPS[op](M, backend=backend)
        with pytest.raises(TypeError, match="masked array"):
            OPS[op](M, backend=backend, check_finite=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", [">f8", ">f4", "<f8", "<f4"])
def test_byte_order_is_accepted(backend, order):
    """>f8/>f4 were TypeErrors although spec 6.1 accepts float64/float32."""
    G = _base().astype(order)
    plain = G.astype(G.dtype.newbyteorder("="))
    for op in OPS:
        out = OPS[op](G, backend=backend)
        assert out.dtype == plain.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, OPS[op](plain, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_np_matrix_works_on_every_backend(backend):
    """np.matrix failed on the reference backend only (matrix products and keepdims)."""
    for op in OPS:
        out = OPS[op](np.matrix(_base()), backend=backend)
        assert type(out) is np.ndarray
        np.testing.assert_array_equal(out, OPS[op](_base(), backend=backend))


def _aligned(x) -> bool:
    """NumPy's flag, or for a CuPy array (whose flags have no 'aligned') its device pointer."""
    if isinstance(x, np.ndarray):
        return bool(x.flags.aligned)
    return x.data.ptr % x.dtype.itemsize == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_misaligned_input_is_copied_before_the_backend(backend, monkeypatch):
    """Misaligned buffers were read in place by the C++ core (UBSan: misaligned loads)."""
    seen = []
    mod = registry.get(backend)
    real = mod.grad_norm
    monkeypatch.setattr(mod, "grad_norm", lambda G, eps: seen.append(_aligned(G))
                        or real(G, eps))
    swanref.grad_norm(_misaligned(_base()), backend=backend)
    assert seen == [True]


DIRECT = {"whiten_preset": lambda G, **kw: presets.whiten_preset(G, "muon_ns5", **kw),
          "run_preset": lambda G, **kw: presets.run_preset(
              G, presets.get_preset("muon_ns5"), presets.schedule("muon_ns5"), **kw),
          "orthogonalized_update": lambda G, **kw: swanref.orthogonalized_update(
              G, "muon_ns5", **kw)}


def _nan_at(G, i, j):
    G = G.copy()
    G[i, j] = np.nan
    return G


@pytest.mark.parametrize("entry", list(DIRECT))
@pytest.mark.parametrize("bad", [
    lambda: np.ma.masked_invalid(_nan_at(_base(), 1, 1)),
    lambda: np.arange(15).reshape(3, 5),
    lambda: _nan_at(_base(), 0, 2),
    lambda: [[1.0, 2.0], [3.0]],
    lambda: np.ones(5),
    lambda: np.ones((3, 0)),
    lambda: _base().astype(object),
], ids=["masked", "int", "nan", "ragged", "1d", "empty_axis", "object"])
def test_direct_entry_points_raise_what_whiten_raises(entry, bad):
    """whiten_preset / run_preset / orthogonalized_update called directly took masked arrays,
    NaN and wrong types raw (LAPACK-free NaN output, 'shapes not aligned', ...): now the same
    exception type and message as swanref.whiten."""
    with pytest.raises(Exception) as want:
        swanref.whiten(bad(), "muon_ns5")
    with pytest.raises(want.type) as got:
        DIRECT[entry](bad())
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("entry", ["whiten_preset", "run_preset"])
def test_direct_preset_calls_normalise_like_whiten(entry):
    G = _base()
    plain = DIRECT[entry](G)
    for odd in (G.astype(">f8"), np.matrix(G), _misaligned(G), G.tolist(), np.asfortranarray(G)):
        out = DIRECT[entry](odd)
        assert type(out) is np.ndarray and out.dtype == np.float64 and out.dtype.isnative
        np.testing.assert_array_equal(out, plain)
    np.testing.assert_array_equal(plain, swanref.whiten(G, "muon_ns5", backend="reference"))
    with pytest.raises(TypeError, match="whiten_preset takes float32"):
        presets.whiten_preset(G.astype(np.float16), "muon_ns5")  # computes in G's dtype
    with pytest.raises(TypeError, match="unexpected keyword argument 'backend'"):
        presets.whiten_preset(G, "muon_ns5", backend="cpp")
    with pytest.raises(TypeError, match="name must be a string"):
        presets.whiten_preset(G, ["muon_ns5"])
    with pytest.raises(TypeError, match="preset must be a swanref.presets.Preset"):
        presets.run_preset(G, "muon_ns5", presets.schedule("muon_ns5"))


@pytest.mark.parametrize("entry", list(DIRECT))
def test_direct_entry_points_check_finite_false_gives_nan_slices(entry):
    G = np.stack([_base(), _nan_at(_base(), 2, 3)])
    out = DIRECT[entry](G, **({"stack_dims": 1} if entry == "orthogonalized_update" else {}),
                        check_finite=False)
    assert np.isnan(out[1]).all()
    np.testing.assert_array_equal(out[0], DIRECT[entry](_base()))


def test_boolean_keywords_need_a_bool():
    """check_finite="no" (truthy) meant check_finite=True; rescale=0.5, row_norm=np.array(...)
    were read by their truth value. Now True/False or a NumPy bool, else a TypeError naming the
    keyword -- the backend settings of the GPU backend too (set_tf32("no") turned TF32 on)."""
    from swanref.backends import cupy as CB  # importing it does not import CuPy
    G = _base()
    calls = {"check_finite": [lambda v: swanref.grad_norm(G, check_finite=v),
                              lambda v: swanref.whiten(G, check_finite=v),
                              lambda v: swanref.swan_update(G, check_finite=v),
                              lambda v: swanref.sinkgd_update(G, check_finite=v),
                              lambda v: presets.whiten_preset(G, "muon_ns5", check_finite=v),
                              lambda v: swanref.orthogonalized_update(G, check_finite=v)],
             "rescale": [lambda v: swanref.swan_update(G, rescale=v)],
             "row_norm": [lambda v: swanref.orthogonalized_update(G, row_norm=v)],
             "enabled": [CB.set_tf32, CB.set_graphs, lambda v: CB.tf32(v).__enter__()]}
    tf32, graphs = CB._state["tf32"], CB._state["graphs"]
    try:
        for name, fns in calls.items():
            for fn in fns:
                for v in NOT_BOOLS:
                    with pytest.raises(TypeError, match=f"{name} must be True or False"):
                        fn(v)
                if name != "enabled":
                    for v in (True, False, np.bool_(True), np.bool_(False)):
                        fn(v)
        for v in (True, False, np.bool_(True)):
            CB.set_tf32(v)
            assert CB.tf32_enabled() is bool(v)
    finally:
        CB._state["tf32"], CB._state["graphs"] = tf32, graphs


_LOAD_CHILD = textwrap.dedent("""
    import sys
    import scipy.linalg.cython_blas as real_blas
    stop = {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[sys.argv[1]]

    class Interrupted:
        # scipy.linalg.cython_blas while the core loads: the first read of its function table
        # is interrupted (what a Ctrl-C during the first, slow SciPy import does)
        reads = 0

        def __getattr__(self, key):
            if key == "__pyx_capi__":
                type(self).reads += 1
                if type(self).reads == 1:
                    raise stop
            return getattr(real_blas, key)

    sys.modules["scipy.linalg.cython_blas"] = Interrupted()
    import numpy as np
    from swanref.backends import registry
    assert "swanref.backends.cpp" not in sys.modules
    try:
        registry.get("cpp")
        print("loaded without the interruption")
    except stop:
        print("interrupted")
    print("available", registry.is_available("cpp"))
    import swanref
    out = swanref.whiten(np.random.default_rng(0).standard_normal((3, 5)), backend="cpp")
    print("whitened", bool(np.allclose(out @ out.T, np.eye(3))))
""")


@pytest.mark.skipif(not registry.is_available("cpp"), reason="no C++ core here")
@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "SystemExit"])
def test_ctrl_c_while_the_core_loads_is_not_cached(stop):
    """A KeyboardInterrupt during the core's first load was swallowed (the BLAS table marked
    incomplete) or turned into ImportError("initialization failed") and cached: the cpp backend
    stayed unavailable for the rest of the process. Now it propagates and the next use loads."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _LOAD_CHILD, stop], capture_output=True,
                       text=True, timeout=120, env=env, cwd=tempfile.gettempdir())
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    assert r.stdout.split("\n")[:3] == ["interrupted", "available True", "whitened True"], \
        (r.stdout, r.stderr[-3000:])


def test_an_interrupted_import_is_re_raised_not_cached():
    """The Python side: the cause chain pybind11 builds is searched for the interruption."""
    from swanref.backends import cpp
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise ImportError("initialization failed") from ki
    except ImportError as exc:
        assert isinstance(cpp._interruption(exc), KeyboardInterrupt)
    assert cpp._interruption(ImportError("no module")) is None
    assert cpp._interruption(ImportError("x").with_traceback(None)) is None


def test_swan_update_method_keyword_names_whiten_method():
    with pytest.raises(TypeError, match="did you mean 'whiten_method'"):
        swanref.swan_update(_base(), method="svd")


# -- load_target must not let files beside the target shadow installed packages ------------------

def test_load_target_does_not_shadow_installed_packages(tmp_path, monkeypatch):
    from swanref.verify.targets import load_target
    for name in ("numpy", "ml_dtypes", "torch", "jax"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('shadowed " + name + "')\n")
    (tmp_path / "helper.py").write_text("SCALE = 2.0\n")
    (tmp_path / "impl.py").write_text(textwrap.dedent("""
        import numpy as np
        import helper                      # a sibling module of the target still imports
        def f(G):
            return np.asarray(G) * helper.SCALE
    """))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    for name in ("ml_dtypes", "torch", "jax", "helper"):
        sys.modules.pop(name, None)
    before = list(sys.path)
    fn = load_target(str(tmp_path / "impl.py") + ":f")
    assert fn(np.ones(2)).tolist() == [2.0, 2.0]
    assert sys.path == before  # nothing left on sys.path, nothing put in front
    assert str(tmp_path) not in sys.path
    for name in ("ml_dtypes", "torch", "jax"):
        spec = importlib.util.find_spec(name)
        assert spec is None or not str(spec.origin).startswith(str(tmp_path)), name
    if importlib.util.find_spec("ml_dtypes") is not None:
        import ml_dtypes
        assert not ml_dtypes.__file__.startswith(str(tmp_path))


def test_load_target_module_form_does_not_prepend_cwd(tmp_path, monkeypatch):
    from swanref.verify.targets import load_target
    (tmp_path / "mytarget_mod.py").write_text("def f(G):\n    return G\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    before = list(sys.path)
    assert load_target("mytarget_mod:f")(3) == 3
    assert sys.path == before


# -- files swanref reads and writes (spec 6.7; issue 23) ------------------------------------------

def _file_class(tmp_path, kind):
    """A path of the given hostile kind; None when this machine cannot make it."""
    path = tmp_path / f"hostile_{kind}"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            return None
        os.mkfifo(path)  # reading it blocks forever
    elif kind == "device":
        if not os.path.exists("/dev/zero"):
            return None
        os.symlink("/dev/zero", path)  # endless zeros: a MemoryError when read whole
    elif kind == "folder":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "huge":
        with open(path, "wb") as fh:
            fh.truncate(3 << 30)  # sparse: 3 GiB on paper, nothing on disk
    elif kind == "million_lines":
        path.write_text("3.4445 -4.775 2.0315\n" * 10**6)  # ran past 60 s before the limit
    elif kind == "deep_json":
        path.write_text("[" * 100000 + "]" * 100000)  # RecursionError before the depth check
    elif kind == "nan":
        path.write_text("[[3.4445, -4.775, NaN]]")
    elif kind == "inf_text":
        path.write_text("3.4445 -4.775 inf\n")
    elif kind == "overflow":
        path.write_text("[[1e999, -4.775, 2.0315]]")
    elif kind == "divisor_0":
        path.write_text('{"coefficients": [[3.4445, -4.775, 2.0315]], "divisor": 0}')
    elif kind == "not_utf8":
        path.write_bytes(b"\xff\xfe 1 2 3\n")
    elif kind == "bad_shape":
        path.write_text("[[3.4445, -4.775, 2.0315, 1.0]]")
    elif kind == "empty":
        path.write_text("# nothing\n")
    return str(path)


#: file class -> what the message says (one line, exit status 2 for the command-line tools)
FILE_CLASSES = {
    "fifo": "not a regular file (a FIFO)",
    "device": "not a regular file (a device)",
    "folder": "not a regular file (a folder)",
    "missing": "not found",
    "huge": "above the 1048576-byte limit",
    "million_lines": "above the 1048576-byte limit",
    "deep_json": "levels deep, above the limit",
    "nan": "is not finite",
    "inf_text": "is not finite",
    "overflow": "is not finite",
    "divisor_0": "divisor must be > 0",
    "not_utf8": "not UTF-8 text",
    "bad_shape": "must be [a, b, c] or [a, b]",
    "empty": "no coefficients found",
}


def _schedule_cli(path, capsys):
    from swanref import cli
    assert cli.main(["schedule", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("swanref schedule: ")
    return err


def _check_cli(path, capsys):
    from swanref import cli
    assert cli.main(["check", "whiten", "swanref:whiten", "--preset", "custom",
                     "--coefficients", path]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--coefficients" in err
    return err


def _load_coefficients(path, capsys):
    with pytest.raises(ValueError) as info:
        swanref.update.load_coefficients(path)
    return str(info.value)


def _schedules_load(path, capsys):
    from swanref.presets import schedules
    with pytest.raises(ValueError) as info:
        schedules.load(path)
    return str(info.value)


#: every reader of a coefficient file: `swanref schedule FILE`, `swanref check --coefficients
#: FILE`, `coefficients=PATH` of the update operator, the schedule module's loader
COEFFICIENT_READERS = {"schedule_cli": _schedule_cli, "check_cli": _check_cli,
                       "load_coefficients": _load_coefficients,
                       "schedules_load": _schedules_load}


@pytest.mark.parametrize("kind", list(FILE_CLASSES))
@pytest.mark.parametrize("reader", list(COEFFICIENT_READERS))
def test_hostile_coefficient_files_are_clear_errors(reader, kind, tmp_path, capsys):
    path = _file_class(tmp_path, kind)
    if path is None:
        pytest.skip(f"cannot make a {kind} here")
    t0 = time.perf_counter()
    message = COEFFICIENT_READERS[reader](path, capsys)
    assert FILE_CLASSES[kind] in message, message
    assert path in message  # names the file
    if kind in ("huge", "million_lines", "fifo", "device"):
        assert time.perf_counter() - t0 < 5, "refused by type/size before reading"


#: a vector set's files: each replaced by a hostile kind gives a one-line error, exit 2
VECTOR_SET_FILES = ("manifest.json", "SHA256SUMS")
VECTOR_FILE_CLASSES = {"fifo": "a FIFO", "device": "a device", "folder": "a folder",
                       "deep_json": "levels deep", "not_utf8": "not UTF-8",
                       "huge_manifest": "-byte limit"}


@pytest.mark.parametrize("kind", list(VECTOR_FILE_CLASSES))
@pytest.mark.parametrize("name", VECTOR_SET_FILES)
def test_hostile_vector_set_files_exit_2(name, kind, tmp_path, capsys):
    import shutil
    from swanref.verify import vectors as V
    if kind == "deep_json" and name == "SHA256SUMS":
        pytest.skip("SHA256SUMS is not JSON")
    d = tmp_path / "set"
    shutil.copytree(V.SHIPPED, d)
    os.unlink(d / name)
    if kind == "huge_manifest":
        with open(d / name, "wb") as fh:
            fh.truncate((64 << 20) + 1)  # sparse, one byte above MAX_MANIFEST_BYTES
    else:
        src = _file_class(tmp_path, kind)
        if src is None:
            pytest.skip(f"cannot make a {kind} here")
        os.rename(src, d / name)  # the device is a link to /dev/zero: moved as a link
    assert V.main_check([str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and VECTOR_FILE_CLASSES[kind] in err, err


@pytest.mark.parametrize("name", ["manifest.json", "SHA256SUMS", "index.tsv",
                                  "cases/grad_norm_basic.in.npy", "cases"])
@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_vectors_force_never_writes_through_links(name, kind, tmp_path, capsys, monkeypatch):
    """issue 23: `swanref vectors OUT --force` followed links planted in OUT and overwrote the
    files outside; a FIFO there blocked it forever."""
    from swanref.verify import vectors as V
    from swanref.verify.vectors import build
    cases = build.build_cases()
    # two cases (the first is grad_norm_basic) keep the 10 cells fast; the writing is the same
    monkeypatch.setattr(build, "build_cases", lambda: cases[:2])
    out, outside = tmp_path / "OUT", tmp_path / "outside"
    (out / "cases").mkdir(parents=True)
    outside.mkdir()
    (outside / "cases").mkdir()
    victim = outside / ("cases/keep" if name == "cases" else "victim")
    victim.write_text("precious")
    if name == "cases":
        os.rmdir(out / "cases")
        if kind == "fifo":
            os.mkfifo(out / "cases")
        else:
            os.symlink(outside / "cases", out / "cases")
    elif kind == "link":
        os.symlink(victim, out / name)
    else:
        os.mkfifo(out / name)
    assert V.main_write([str(out), "--force"]) == 0, capsys.readouterr().err
    assert victim.read_text() == "precious" and sorted(os.listdir(outside)) == ["cases", "victim"] \
        or name == "cases" and sorted(os.listdir(outside / "cases")) == ["keep"]
    for entry in ("manifest.json", "SHA256SUMS", "index.tsv", "cases"):
        assert not os.path.islink(out / entry)
    assert V.verify_checksums(str(out)) == []  # a complete, valid set


def test_write_vectors_refuses_a_linked_cases_folder(tmp_path):
    from swanref.verify import vectors as V
    from swanref.verify.vectors.build import write_vectors
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "OUT").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "OUT" / "cases")
    with pytest.raises(OSError, match="symbolic link"):
        write_vectors(str(tmp_path / "OUT"))
    assert os.listdir(tmp_path / "elsewhere") == []
    assert V  # the package re-exports main_write used above


@pytest.mark.parametrize("option", ["--markdown", "--json"])
@pytest.mark.parametrize("where", ["missing_folder", "a_folder"])
def test_bench_output_file_problems_exit_2_before_the_run(option, where, tmp_path, capsys):
    """issue 23: `swanref bench --markdown` into a missing folder ran the whole benchmark and
    then died with a traceback."""
    from swanref import cli
    target = str(tmp_path / "no" / "such" / "t.md") if where == "missing_folder" else str(tmp_path)
    try:
        code = cli.main(["bench", option, target])
    except SystemExit as exc:  # argparse's error exit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert f"{option} {target}:" in err and "Traceback" not in err
    assert ("does not exist" if where == "missing_folder" else "is a folder") in err


# -- a NaN written into G while the operator reads it (spec 6.4; issue 23) ------------------------

@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("op,kernel", [("grad_norm", "grad_norm"), ("sinkgd_update", "sinkgd")])
@pytest.mark.parametrize("restore", [False, True], ids=["left", "restored"])
def test_nan_written_during_the_call_is_an_error_not_a_result(backend, op, kernel, restore,
                                                              monkeypatch):
    """issue 23: another thread wrote NaN into G while the C++ grad_norm/sinkgd ran with
    check_finite=True, and NaN came back (7 of ~14,600 calls).  The write is simulated
    deterministically inside the kernel call, after the operator's own checks; the finite
    check runs on what the kernel computed, so the call raises."""
    if not registry.is_available(backend):
        pytest.skip(f"backend {backend!r} not available here")
    be = registry.get(backend)
    original = getattr(be, kernel)
    G = _base()  # float64, C-contiguous: the kernel reads G's own memory
    seen = []

    def racing(X, *args):
        seen.append(np.shares_memory(X, G))
        old, G[1, 2] = G[1, 2], np.nan  # "another thread" writes while the kernel reads
        try:
            return original(X, *args)
        finally:
            if restore:
                G[1, 2] = old

    monkeypatch.setattr(be, kernel, racing)
    with pytest.raises(ValueError, match="changed during the call" if restore else "non-finite"):
        getattr(swanref, op)(G, backend=backend)
    assert seen == [True]
