"""Schedule verifier and Polar Express regeneration (swanref.presets.schedules) vs the published
Polar Express coefficients (Amsel et al., arXiv 2505.16932)."""
from __future__ import annotations

import json

import mpmath as mp
import numpy as np
import pytest

from swanref import presets
from swanref.presets import schedules as S


def _rel(x, y):
    return float(abs(mp.mpf(x) / mp.mpf(y) - 1))


# -- Polar Express coefficients from their definition ------------------------------------------

def test_generator_reproduces_speedrun_set():
    """modded-nanogpt / dion / nanochat: "num_iters=5, safety_factor=2e-2, cushion=2" (= 2 %)."""
    gen = S.optimal_composition("1e-3", 5, "2e-2", "0.02")
    for got, pub in zip(gen, presets.PE_NANOGPT5):
        for g, p in zip(got, pub):
            assert _rel(g, p) <= 4e-15      # the published values are float64 results


def test_generator_reproduces_basic_table():
    """PolarExpress basic.py raw table = paper appendix settings (cushion 0.0240..., no safety)."""
    gen = S.optimal_composition("1e-3", 8, 0, S.PE_CUSHION_PAPER)
    for k, (got, pub) in enumerate(zip(gen, presets.PE_BASIC_RAW)):
        # steps 1-6 to float64 round-off; step 7 (l/u = 0.9976, the 4x4 Remez system is
        # ill-conditioned in float64) to 3e-11; step 8 is published as the limit (15/8, -10/8,
        # 3/8) while the definition gives (15/8)/u etc. with u = 1 + 2.6e-9
        tol = 4e-15 if k < 6 else (3e-11 if k == 6 else 6e-9)
        for g, p in zip(got, pub):
            assert _rel(g, p) <= tol, (k, g, p)
    # the shipped polar_express preset is that table with 1.01 divided into the first 7
    for (a, b, c), (ra, rb, rc) in zip(presets.PE_BASIC[:-1], presets.PE_BASIC_RAW[:-1]):
        assert (a, b, c) == (ra / 1.01, rb / 1.01 ** 3, rc / 1.01 ** 5)


def test_optimal_quintic_equioscillates():
    with mp.workdps(40):
        l, u = mp.mpf("0.05"), mp.mpf(1)
        a, b, c = S.optimal_quintic(l, u)
        p = lambda x: a * x + b * x ** 3 + c * x ** 5  # noqa: E731
        disc = mp.sqrt(9 * b ** 2 - 20 * a * c)
        q, r = mp.sqrt((-3 * b - disc) / (10 * c)), mp.sqrt((-3 * b + disc) / (10 * c))
        errs = [1 - p(x) for x in (l, q, r, u)]
        E = abs(errs[0])
        assert all(abs(abs(e) - E) < mp.mpf(10) ** -30 for e in errs)
        assert [mp.sign(e) for e in errs] == [1, -1, 1, -1]
        xs = np.linspace(0.05, 1, 20001)
        vals = np.array([float(1 - p(mp.mpf(x))) for x in xs[::50]])
        assert np.max(np.abs(vals)) <= float(E) * (1 + 1e-12)


# -- the verifier's numbers vs note section 5.1 ---------------------------------------------------

#: (schedule, divisor override) -> slope at 0, {l: (min, max)} (no input divisor)
NOTE_5_1 = [
    (("muon_ns5", None), 485, {1e-2: (0.682, 1.134), 1e-3: (0.471, 1.202), 1e-4: (0.049, 1.202)}),
    (("you_ns5", None), 493, {1e-2: (0.978, 1.032), 1e-3: (0.475, 1.145), 1e-4: (0.049, 1.145)}),
    (("polar_express_nanogpt", 1.0), 990,
     {1e-2: (0.859, 1.141), 1e-3: (0.859, 1.141), 1e-4: (0.099, 1.141)}),
    (("polar_express", 1.0), 6363, {1e-2: (1.0, 1.0), 1e-3: (1.0, 1.0), 1e-4: (0.575, 1.0)}),
    (("jiacheng6", None), 1137, {1e-2: (0.996, 0.999), 1e-3: (0.866, 0.999),
                                 1e-4: (0.113, 0.999)}),
    (("deepseek_v4", None), 79263, {1e-2: (1.0, 1.00054), 1e-3: (1.0, 1.00054),
                                    1e-4: (1.0, 1.002)}),
]


@pytest.mark.parametrize("case", NOTE_5_1, ids=lambda c: c[0][0])
def test_bands_from_the_note(case):
    (name, div), slope, bands = case
    s = S.from_preset(name)
    if div is not None:
        s = S.Schedule(s.coefficients, div, name)
    assert float(s.slope0()) == pytest.approx(slope, rel=1e-3)
    for lo, (mn, mx) in bands.items():
        fmin, fmax, _, _ = S.band(s, lo)
        assert float(fmin) == pytest.approx(mn, abs=6e-4), (name, lo)
        assert float(fmax) == pytest.approx(mx, abs=6e-4), (name, lo)


def test_band_details():
    # PE 8 steps: within 2e-15 of 1 over [1e-3, 1] (note: "+-2e-15", fp64)
    fmin, fmax, _, _ = S.band(S.Schedule(presets.PE_BASIC, 1.0), 1e-3)
    assert abs(fmin - 1) < 2e-15 and abs(fmax - 1) < 2e-15
    # DSV4: 5.4e-4 / 2.0e-3
    s = S.from_preset("deepseek_v4")
    assert float(S.band(s, 1e-3)[1]) - 1 == pytest.approx(5.4e-4, abs=0.1e-4)
    assert float(S.band(s, 1e-4)[1]) - 1 == pytest.approx(2.0e-3, abs=0.1e-3)
    # Three PE sets with their divisors over [1e-3, 1]
    assert [round(float(v), 3) for v in S.band(S.from_preset("polar_express_nanogpt"), 1e-3)[:2]] \
        == [0.847, 1.141]
    assert [round(float(v), 3) for v in
            S.band(S.Schedule(presets.PE_BASIC[:5], 1.01), 1e-3)[:2]] == [0.840, 1.124]
    gram = [(a / 1.05, b / 1.05 ** 3, c / 1.05 ** 5) for a, b, c in presets.PE_BASIC_RAW[:5]]
    assert [round(float(v), 3) for v in S.band(S.Schedule(gram, 1.0), 1e-3)[:2]] == [0.729, 1.124]
    # cubic NS 5 / 10 / 20 steps, min over [l, 1]
    for k, mins in ((5, (0.076, 0.0076, 0.00076)), (10, (0.53, 0.058, 0.0058)),
                    (20, (1.0, 0.99994, 0.323))):
        s = S.from_preset("cubic", k)
        for lo, mn in zip((1e-2, 1e-3, 1e-4), mins):
            assert float(S.band(s, lo)[0]) == pytest.approx(mn, rel=0.02), (k, lo)
    # Keller's attractor [0.6819, 1.1343]
    fmin, fmax, _, _ = S.band(S.from_preset("muon_ns5", 100), 1e-2)
    assert (round(float(fmin), 4), round(float(fmax), 4)) == (0.6819, 1.1343)


def test_blowup_margin_and_probes():
    nano = S.from_preset("polar_express_nanogpt")
    assert 1.04 < float(S.blowup(nano)) < 1.045
    assert 1e79 < abs(nano.mp(mp.mpf("1.05"))) < 1e80            # earlier evaluation: 2e79
    raw = S.Schedule(presets.PE_BASIC_RAW[:5], 1.0)
    assert 1e149 < abs(raw.mp(mp.mpf("1.02"))) < 1e150            # earlier evaluation: 1e149
    assert float(S.blowup(raw)) < 1.0001                           # explodes right above 1
    keller = S.from_preset("muon_ns5")
    assert 1.2 < float(S.blowup(keller)) < 1.3                     # "tolerant up to ~1.2"
    assert 1e98 < abs(keller.mp(mp.mpf("1.3"))) < 1e99             # note: 1.3 -> 1e98
    assert 1.3 < float(S.blowup(S.from_preset("you_ns5"))) < 1.4  # "tolerant up to ~1.3"


def test_leakage_figure():
    s = S.from_preset("muon_ns5")
    out, amp = S.leak(s, "float32")
    assert float(amp) == pytest.approx(float(s.slope0()), rel=1e-3)
    # the note's measured fp32 leakage (256x1024, rank 64) is below F(u) and above F(u)/10
    assert float(out) / 10 < 7.5e-6 < float(out)
    out_bf, amp_bf = S.leak(s, "bfloat16")
    assert float(out_bf) > 0.5 and float(amp_bf) < float(s.slope0())   # saturated


# -- command line ----------------------------------------------------------------------------------

def test_cli_preset_and_files(tmp_path, capsys):
    assert S.main(["muon_ns5"]) == 0
    out = capsys.readouterr().out
    assert "484.876" in out and "[0.681831, 1.134357]" in out and "bfloat16" in out
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"coefficients": [list(t) for t in presets.PE_NANOGPT5],
                             "divisor": 1.02}))
    assert S.main([str(f), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["slope0"] == pytest.approx(970.067, rel=1e-6)
    t = tmp_path / "s.txt"
    t.write_text("# Keller\n3.4445, -4.7750, 2.0315\n")
    assert S.main([str(t), "--steps", "5", "--lower", "0.01"]) == 0
    assert "[0.681831, 1.134357]" in capsys.readouterr().out
    assert S.main(["--generate", "1e-3", "5", "--safety", "2e-2", "--cushion", "0.02"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("(8.15655452490246")
    assert S.main(["no_such_preset_or_file"]) == 2
    assert S.main([]) == 2


def test_cli_dispatcher():
    from swanref import cli
    assert cli.main(["schedule", "cubic", "--steps", "3", "--lower", "0.1"]) == 0
