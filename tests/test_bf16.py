"""bf16 / fp16 emulation (swanref.presets.lowprec) and the emulated presets."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from swanref.presets import lowprec as bf16
from swanref.presets import catalogue as presets
from swanref.presets.catalogue import whiten_preset


def _bits_rne_bf16(x):
    """Note section 5 transcription: round-to-nearest-even on the float32 bit pattern."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + (((u >> 16) & 1) + 0x7FFF)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32)


def _rint_fp16(x):
    """Independent fp16 RNE for the normal range: scale the mantissa to 11 bits, np.rint (even)."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)                 # x = m 2^e, 0.5 <= |m| < 1
    return np.ldexp(np.rint(np.ldexp(m, 11)), e - 11)


def test_round_to_bf16_matches_bit_rounding():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * np.exp(rng.uniform(-30, 30, 200_000))).astype(np.float32)
    np.testing.assert_array_equal(bf16.round_to(x), _bits_rne_bf16(x))
    np.testing.assert_array_equal(bf16.round_bits_bf16(x), _bits_rne_bf16(x))
    # exact ties: low 16 bits = 0x8000 round to the even neighbour
    hi = rng.integers(0x3F80, 0x4000, 1000, dtype=np.uint32)
    ties = ((hi << 16) | 0x8000).view(np.float32)
    r = bf16.round_to(ties).view(np.uint32)
    assert np.all((r >> 16) % 2 == 0)
    assert np.all(np.abs(r.astype(np.int64) - (hi << 16).astype(np.int64)) <= 0x10000)
    # specials
    sp = np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38], np.float32)
    out = bf16.round_to(sp)
    assert out[0] == 0 and np.signbit(out[1]) and np.isinf(out[2:]).all()
    assert np.isnan(bf16.round_to(np.float32(np.nan)))


def test_round_to_fp16_matches_rint():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(100_000) * np.exp(rng.uniform(-9, 10, 100_000))).astype(np.float32)
    x = x[(np.abs(x) > 2.0 ** -14) & (np.abs(x) < 65000)]        # the normal range of fp16
    np.testing.assert_array_equal(bf16.round_to(x, "float16"), _rint_fp16(x).astype(np.float32))


def test_representable_and_ulp():
    assert bf16.is_representable(np.float32(1.0078125))          # 1 + 2^-7
    assert not bf16.is_representable(np.float32(1.00390625))     # 1 + 2^-8
    assert bf16.is_representable(np.float32(1.00390625), "float16")
    assert bf16.ulp(1.0) == 2.0 ** -7 and bf16.ulp(1.0, "float16") == 2.0 ** -10
    assert bf16.ulp(3.0) == 2.0 ** -6
    with pytest.raises(ValueError, match="emulation format"):
        bf16.round_to(1.0, "fp8")


class _Recording(bf16.Arith):
    """Arith that keeps every value it produces."""
    seen: list = []

    def r(self, x):
        out = super().r(x)
        _Recording.seen.append(out)
        return out


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["muon_ns5", "torch_muon", "polar_express_nanogpt", "jiacheng6",
                                  "nemo_polar_express"])
def test_every_intermediate_is_representable(name, fmt, monkeypatch):
    monkeypatch.setattr(presets, "Arith", _Recording)
    _Recording.seen = []
    G = np.random.default_rng(2).standard_normal((2, 24, 40))
    out = whiten_preset(G, name, emulate=fmt)
    assert len(_Recording.seen) >= 10
    for v in _Recording.seen:
        assert bf16.is_representable(v, fmt)
    assert bf16.is_representable(out, fmt)
    assert out.dtype == np.float64


def _ns5_transcription(G, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    """Keller NS5 in bf16 as the note writes it (section 5), with PyTorch-eager normalisation."""
    r = _bits_rne_bf16
    X = r(np.asarray(G, np.float32))
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    nrm = r(np.float32(np.sqrt(np.sum(X.astype(np.float64) ** 2))))
    X = r(X / r(nrm + np.float32(1e-7)))
    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    for _ in range(steps):
        A = r(X @ X.T)
        B = r(r(b * A) + r(r(c * A) @ A))
        X = r(r(a * X) + r(B @ X))
    return X.T if tall else X


def _torch_muon_transcription(G, steps=5, a=3.4445, b=-4.775, c=2.0315, eps=1e-7):
    r = _bits_rne_bf16
    X = r(np.asarray(G, np.float32))
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    nrm = r(np.float32(np.sqrt(np.sum(X.astype(np.float64) ** 2))))
    X = r(X / max(nrm, np.float32(eps)))
    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    for _ in range(steps):
        gram = r(X @ X.T)
        upd = r(b * gram + c * (gram @ gram))          # addmm: one rounding
        X = r(a * X + upd @ X)
    return X.T if tall else X


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48)])
def test_emulated_presets_match_transcriptions(shape):
    rng = np.random.default_rng(3)
    G = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(whiten_preset(G, "muon_ns5", emulate="bfloat16"),
                                  _ns5_transcription(G))
    np.testing.assert_array_equal(whiten_preset(G, "torch_muon", emulate="bfloat16"),
                                  _torch_muon_transcription(G))
    # emulate='source' for a bf16 source is bf16 emulation
    np.testing.assert_array_equal(whiten_preset(G, "muon_ns5", emulate="source"),
                                  whiten_preset(G, "muon_ns5", emulate="bfloat16"))
    # float64 input is rounded via float32, like torch's double -> bfloat16
    np.testing.assert_array_equal(
        whiten_preset(G.astype(np.float64), "muon_ns5", emulate="bfloat16"),
        whiten_preset(G, "muon_ns5", emulate="bfloat16").astype(np.float64))


def test_emulation_batched_equals_per_slice():
    G = np.random.default_rng(4).standard_normal((3, 16, 40)).astype(np.float32)
    out = whiten_preset(G, "polar_express_nanogpt", emulate="bfloat16")
    for i in range(3):
        np.testing.assert_array_equal(out[i], whiten_preset(G[i], "polar_express_nanogpt",
                                                            emulate="bfloat16"))


def test_emulation_error_size():
    """bf16 result vs the float64 reference path: a few bf16 ulps-per-step, not more."""
    G = np.random.default_rng(5).standard_normal((64, 256))
    ref = whiten_preset(G, "muon_ns5")
    emu = whiten_preset(G, "muon_ns5", emulate="bfloat16")
    f16 = whiten_preset(G, "muon_ns5", emulate="float16")
    e_bf = np.linalg.norm(emu - ref) / np.linalg.norm(ref)
    e_16 = np.linalg.norm(f16 - ref) / np.linalg.norm(ref)
    assert 1e-3 < e_bf < 0.1          # bf16 u = 2^-8 = 3.9e-3
    assert e_16 < e_bf / 4            # fp16 u = 2^-11
    assert ml_dtypes.bfloat16 is not None


def test_emulation_matches_torch_bf16_if_available():
    """Where PyTorch is installed: real torch bf16 (eager, its own device) vs the emulation."""
    torch = pytest.importorskip("torch")
    G = np.random.default_rng(8).standard_normal((128, 384)).astype(np.float32)
    X = torch.from_numpy(G).bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(5):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    real = X.float().numpy()
    emu = whiten_preset(G, "muon_ns5", emulate="bfloat16")
    ref = whiten_preset(G.astype(np.float64), "muon_ns5")
    d = np.linalg.norm(real - emu) / np.linalg.norm(emu)
    assert d < 0.03                 # measured: CPU 0.003-0.017, H100 0.004-0.026 (docs/presets.md 6)
    e_real = np.linalg.norm(real - ref) / np.linalg.norm(ref)
    e_emu = np.linalg.norm(emu - ref) / np.linalg.norm(ref)
    assert abs(e_real / e_emu - 1) < 0.1
