"""The CuPy backend runs the polynomial presets (docs/presets.md) like the reference does, in
the input precision and natively in bfloat16/float16 (PyTorch-eager rounding)."""
from __future__ import annotations

import numpy as np
import pytest

import swanref
from swanref.backends import registry as _backends
from swanref import presets
from swanref.presets import catalogue, lowprec

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _backends.is_available("cupy"),
                                 reason="needs CuPy and an NVIDIA GPU")]

POLY = [n for n, p in presets.PRESETS.items()
        if p.form in ("keller", "addmm") and p.transpose == "to_wide" and n != "custom"
        and p.norm_over == "matrix"]

#: bf16 emulation against PyTorch on an H100 (docs/spec.md 6.2): products differ by at most one
#: unit in the last place of bfloat16 (summation order), which the iteration carries to <= 0.026
#: relative Frobenius difference over 5 steps; the GPU path against the CPU emulation has the
#: same source of difference.
BF16_AGREEMENT = 0.026


@pytest.mark.parametrize("name", POLY)
@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (3, 8, 24)])
def test_matches_reference_float64(name, shape):
    import cupy
    G = np.random.default_rng(1).standard_normal(shape)
    ref = swanref.whiten(G, method=name, backend="reference")
    out = swanref.whiten(cupy.asarray(G), method=name)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), ref, atol=1e-12)


@pytest.mark.parametrize("name", ["muon_ns5", "torch_muon", "polar_express"])
def test_matches_reference_float32_and_zero(name):
    import cupy
    G = np.random.default_rng(2).standard_normal((2, 24, 64)).astype(np.float32)
    ref = swanref.whiten(G, method=name, backend="reference")
    out = cupy.asnumpy(swanref.whiten(cupy.asarray(G), method=name))
    np.testing.assert_allclose(out, ref, atol=5e-5)
    Z = cupy.zeros((4, 6))
    np.testing.assert_array_equal(cupy.asnumpy(swanref.whiten(Z, method=name)), 0)


@pytest.mark.parametrize("name", POLY)
@pytest.mark.parametrize("shape", [(64, 160), (2, 32, 96), (96, 40)])
def test_native_bfloat16_matches_cpu_emulation(name, shape):
    import cupy
    G = lowprec.round_to(np.random.default_rng(3).standard_normal(shape), "bfloat16")
    cpu = catalogue.whiten_preset(G, name, emulate="bfloat16")
    gpu = cupy.asnumpy(swanref.whiten(cupy.asarray(G), method=name, emulate="bfloat16"))
    assert gpu.dtype == np.float32 and lowprec.is_representable(gpu, "bfloat16")
    rel = np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu)
    assert rel <= BF16_AGREEMENT, rel


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_native_lowprec_values_zero_and_source(fmt):
    import cupy
    G = np.random.default_rng(4).standard_normal((2, 16, 48)).astype(np.float32)
    out = cupy.asnumpy(swanref.whiten(cupy.asarray(G), method="muon_ns5", emulate=fmt))
    assert lowprec.is_representable(out, fmt) and np.isfinite(out).all()
    Z = cupy.zeros((4, 6), dtype=cupy.float32)
    np.testing.assert_array_equal(
        cupy.asnumpy(swanref.whiten(Z, method="muon_ns5", emulate=fmt)), 0)
    if fmt == "bfloat16":  # muon_ns5's source computes in bfloat16
        src = swanref.whiten(cupy.asarray(G), method="muon_ns5", emulate="source")
        np.testing.assert_array_equal(cupy.asnumpy(src), out)


def test_emulation_of_other_forms_is_refused_on_gpu_arrays():
    import cupy
    other = [n for n, p in presets.PRESETS.items() if n not in POLY and n != "custom"]
    assert other
    with pytest.raises(ValueError, match="runs on NumPy arrays only"):
        swanref.whiten(cupy.ones((3, 4)), method=other[0], emulate="bfloat16")


def test_bfloat16_word_checks_match_their_elementwise_definitions():
    """The fused bfloat16 finite flag and huge-value shift (two-pass reductions of the magnitude
    bits) equal their definitions on the words: any exponent field all ones; frexp of the
    largest magnitude, 0 for NaN/Inf. Words cover zeros, subnormals, every exponent, Inf, NaN."""
    cp = pytest.importorskip("cupy")
    from swanref.backends.cupy import interop as I
    from swanref.backends.cupy.interop import HUGE
    rng = np.random.default_rng(13)
    h, t = HUGE[np.dtype(np.float32)]
    for shape in ((3, 17, 40), (1, 4, 70000), (2, 1, 5)):
        W = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
        W[..., 0, 0] = 0x7F7F  # largest finite
        for case in range(4):
            V = W.copy()
            if case == 0:
                V &= 0x807F | (0x3F << 7)  # exponents up to 63 (small values), no Inf/NaN
            elif case == 1:
                V[0, 0, -1] = 0x7F80  # +Inf
            elif case == 2:
                V[-1, -1, 0] = 0xFFC1  # NaN
            else:  # finite, huge: exponent field 255 turned into 254
                V[(V & 0x7F80) == 0x7F80] &= 0xFF7F
            d = cp.asarray(V)
            nonfinite = ((V & 0x7F80) == 0x7F80).any()
            assert bool(I.bfloat16_finite_flag(d)) == (not nonfinite)
            mag = (V & 0x7FFF).reshape(V.shape[0], -1).max(axis=1).astype(np.uint32) << 16
            amax = mag.view(np.float32)
            amax = np.where(np.isfinite(amax), amax, 0)
            e = np.frexp(amax)[1]
            want = np.where(e > h, e - t, 0).astype(np.int32)
            assert np.array_equal(I.huge_shift_bfloat16(d).get(), want)


def _word_definitions(V, batch):
    """Shift and all-finite flag of the words V (NumPy, seen as ``batch`` matrices) from their
    definitions: frexp of the largest magnitude (0 for NaN/Inf), any exponent field all ones."""
    from swanref.backends.cupy.interop import HUGE
    h, t = HUGE[np.dtype(np.float32)]
    mag = (V & 0x7FFF).reshape(batch, -1).max(axis=1).astype(np.uint32) << 16
    amax = mag.view(np.float32)
    e = np.frexp(np.where(np.isfinite(amax), amax, 0))[1]
    return np.where(e > h, e - t, 0).astype(np.int32), not ((V & 0x7F80) == 0x7F80).any()


@pytest.mark.parametrize("shape, offset", [
    ((2, 64, 96), 0),         # 16-byte loads, one part per matrix
    ((3, 17, 41), 0),         # odd slice: one word at a time
    ((2, 64, 96), 1),         # misaligned start (a view one word in): one word at a time
    ((1, 4, 70000), 0),       # several parts per matrix
    ((1, 1025, 16392), 0),    # more than 1024 x 16K words: the parts cap, longer strides
    ((40000, 1, 8), 0),       # many matrices: several blocks in the second pass
])
def test_bfloat16_scan_kernels_match_the_definitions(shape, offset, monkeypatch):
    """The two scan kernels (not the elementwise fallback: the test fails if they did not run)
    give the shift per matrix and the flag of the definitions, for NaN/Inf at the first and
    last word and in between, huge and small values; the elementwise route (the fallback, also
    taken when a kernel fails) gives the same."""
    cp = pytest.importorskip("cupy")
    from swanref.backends.cupy import _runtime as rt
    from swanref.backends.cupy import interop as I
    monkeypatch.setitem(rt.state, "bf16_scan", True)
    shifted = False
    rng = np.random.default_rng(sum(shape) + offset)
    batch, size = shape[0], int(np.prod(shape))
    base = rng.integers(0, 1 << 16, size=size + offset, dtype=np.uint16)
    base[(base & 0x7F80) == 0x7F80] &= 0xFF7F  # finite
    for case in ("finite", "small", "inf_first", "nan_last", "nan_inside"):
        B = base.copy()
        V = B[offset:]
        if case == "small":
            V &= 0x807F | (0x3F << 7)  # exponents below 64: no shift anywhere
        elif case == "inf_first":
            V[0] = 0xFF80
        elif case == "nan_last":
            V[-1] = 0x7FC1
        elif case == "nan_inside":
            V[size // 2 + 3] = 0xFFFF
        V = V.reshape(shape)
        want_shift, want_ok = _word_definitions(V, batch)
        shifted |= bool(want_shift.any())
        D = cp.asarray(B)[offset:].reshape(shape)
        assert (D.data.ptr % 16 == 0) == (offset == 0)
        got = I._bf16_scan(D, batch, want_ok=True)
        assert got is not None and "bf16_scan_error" not in rt.state, rt.state.get(
            "bf16_scan_error")
        assert np.array_equal(got[0].get(), want_shift), case
        assert bool(got[1]) == want_ok, case
        assert np.array_equal(I.huge_shift_bfloat16(D).get(), want_shift), case
        assert bool(I.bfloat16_finite_flag(D)) == want_ok, case
        assert np.array_equal(I._huge_shift_bfloat16_elementwise(D).get(), want_shift), case
        assert bool(I._bfloat16_finite_flag_elementwise(D)) == want_ok, case
    assert shifted  # huge values were among the words


def test_bfloat16_scan_failure_falls_back_to_the_elementwise_route(monkeypatch):
    """A scan kernel that fails (compile or launch) switches the process to the elementwise
    route, says why in the backend state, and the answers stay right; SWANREF_CUPY_BF16_SCAN=0
    (state off) takes that route without trying."""
    cp = pytest.importorskip("cupy")
    from swanref.backends.cupy import _runtime as rt
    from swanref.backends.cupy import interop as I
    monkeypatch.setitem(rt.state, "bf16_scan", True)
    monkeypatch.delitem(rt.state, "bf16_scan_error", raising=False)
    V = np.random.default_rng(5).integers(0, 1 << 16, size=(2, 8, 24), dtype=np.uint16)
    want_shift, want_ok = _word_definitions(V, 2)
    D = cp.asarray(V)

    def broken(*args, **kwargs):
        raise RuntimeError("NVRTC said no")
    monkeypatch.setattr(I.K, "kernel", broken)
    assert np.array_equal(I.huge_shift_bfloat16(D).get(), want_shift)
    assert rt.state["bf16_scan"] is False and "NVRTC said no" in rt.state["bf16_scan_error"]
    assert bool(I.bfloat16_finite_flag(D)) == want_ok
    rt.state.pop("bf16_scan_error")  # (not monkeypatch: its undo would put the error back)
    assert I._bf16_scan(D, 2, want_ok=True) is None and "bf16_scan_error" not in rt.state


@pytest.mark.parametrize("fmt, shape, scale", [
    ("bfloat16", (3, 17, 41), 1.0),
    ("bfloat16", (1, 1025, 16392), 1.0),   # the parts cap
    ("bfloat16", (40000, 1, 8), 1.0),      # several blocks in the second pass
    ("bfloat16", (2, 64, 96), 2.0 ** -66),  # squares subnormal in float32, kept exactly
    ("float16", (2, 33, 100), 1.0),
])
def test_lowprec_sum_of_squares_kernel(fmt, shape, scale, monkeypatch):
    """The scan module's per-matrix sum of squares of 16-bit words is the float32 sum of exact
    squares: within float32 summation error of the float64 sum, also where the squares are
    subnormal (CuPy's flush-to-zero elementwise squares gave 0 there)."""
    cp = pytest.importorskip("cupy")
    from swanref.backends.cupy import _runtime as rt
    from swanref.backends.cupy import interop as I
    monkeypatch.setitem(rt.state, "bf16_scan", True)
    rng = np.random.default_rng(7)
    # magnitudes in [1, 2) * scale: every square exact in float32 (subnormal ones included)
    vals = lowprec.round_to(rng.uniform(1, 2, shape) * rng.choice([-1.0, 1.0], shape) * scale,
                            fmt)
    words = (vals.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16) if fmt == "bfloat16" \
        else vals.astype(np.float16).view(np.uint16)
    got = I.lp_sumsq(cp.asarray(words), fmt)
    assert got is not None and "bf16_scan_error" not in rt.state, rt.state.get("bf16_scan_error")
    want = (vals.astype(np.float64) ** 2).reshape(shape[0], -1).sum(axis=1)
    assert got.dtype == np.float64 and got.shape == (shape[0],)
    # float32 summation, sequential additions on a value's path: at most 66 per thread, 5 + 5
    # in the block, 32 + 5 over the parts: relative error below 113 * 2**-24 = 6.7e-6
    np.testing.assert_allclose(got.get(), want, rtol=1e-5)
