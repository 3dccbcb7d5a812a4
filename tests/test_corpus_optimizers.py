"""Real optimizer code not written for swanref, checked as a new user would at every level:
timm's Muon (``timm.optim.muon``: its ``quintic`` table is you_ns5's, ``X / max(||X||_F, eps)``,
bfloat16, ``match_rms_adamw`` = Moonlight's 0.2 sqrt(max(m, n)), EMA momentum) and Moonlight's
Muon (tests/corpus/moonlight_muon.py, vendored with its MIT licence: Keller's table, add 1e-7,
bfloat16, SGD momentum with Nesterov on by default, 2-D parameters only).  Each is CONFORMING
under the claim its source states (a preset plus ``--set``, nothing dropped) and a planted bug
is NOT CONFORMING with its cause named.  timm tests skip where timm is absent; Moonlight's
where torch is."""
import importlib
import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from swanref.cli import main as cli_main
from swanref.verify.checker import check
from swanref.verify.claims import Claim

YOU = [[4.0848, -6.8946, 2.927], [3.9505, -6.3029, 2.6377], [3.7418, -5.5913, 2.3037],
       [2.8769, -3.1427, 1.2046], [2.8366, -3.0525, 1.2012]]


def _timm_muon():
    """timm.optim.muon; timm/__init__ imports torchvision (its layers), which a CPU-only torch
    may lack a matching build of: the optimizer module needs torch only, so it is then loaded
    without the package's __init__ (skip where timm is not installed)."""
    pytest.importorskip("torch")
    if "timm.optim.muon" in sys.modules:
        return sys.modules["timm.optim.muon"]
    spec = importlib.util.find_spec("timm")
    if spec is None:
        pytest.skip("timm is not installed")
    try:
        return importlib.import_module("timm.optim.muon")
    except Exception:  # noqa: BLE001 - torchvision missing or mismatched
        for k in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[k]
        root = list(spec.submodule_search_locations)[0]
        for name, path in (("timm", root), ("timm.optim", root + "/optim")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
        try:
            return importlib.import_module("timm.optim.muon")
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"timm.optim.muon cannot be imported: {exc}")


def _optimizer(args, capsys):
    code = cli_main(["check-optimizer", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, {r["name"]: r for r in out["results"]}


# -- the operator level: a stated epsilon form (clamp) --------------------------------------------

def timm_zeropower_numpy(G, eps=1e-7):
    """timm's zeropower_via_newtonschulz(dtype=float32) in NumPy: transpose tall input,
    X / max(||X||_F, eps), the quintic (you_ns5) table."""
    X = np.asarray(G, np.float32)
    tall = X.shape[-2] > X.shape[-1]
    X = np.swapaxes(X, -1, -2) if tall else X
    X = X / np.maximum(np.linalg.norm(X, axis=(-2, -1), keepdims=True), np.float32(eps))
    for a, b, c in YOU:
        A = X @ np.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * A @ A) @ X
    return (np.swapaxes(X, -1, -2) if tall else X).astype(G.dtype)


def test_operator_claim_states_the_sources_epsilon_form():
    """you_ns5 adds its epsilon; timm clamps it.  The operator check evaluates a stated eps_form
    (before: "cannot evaluate eps_form", and under the preset's own form the faithful code
    failed naming clamp)."""
    clamp = Claim.from_preset("you_ns5", compute_dtype="float32", eps_form="clamp")
    assert check(timm_zeropower_numpy, "whiten", claim=clamp).exit_code == 0
    r = check(timm_zeropower_numpy, "whiten",
              claim=Claim.from_preset("you_ns5", compute_dtype="float32"))
    assert r.exit_code == 1 and "'clamp' with eps=1e-07" in r.results[0].cause
    # a planted epsilon 10x too small is named against the stated form
    r = check(lambda G: timm_zeropower_numpy(G, 1e-8), "whiten", claim=clamp)
    assert r.exit_code == 1 and "'clamp' with eps=1e-08" in r.results[0].cause
    with pytest.raises(ValueError, match="on a preset only"):
        check(timm_zeropower_numpy, "whiten", claim=Claim(method="svd", eps=1e-7))


def test_timm_zeropower_operator_and_update():
    M = _timm_muon()
    clamp = Claim.from_preset("you_ns5", compute_dtype="float32", eps_form="clamp")
    kw = dict(steps=5, coefficients=YOU, dtype=__import__("torch").float32)
    r = check(M.zeropower_via_newtonschulz, "whiten", claim=clamp, kwargs=kw,
              array_type="torch")
    assert r.exit_code == 0, r.table()

    def update(G):  # the per-parameter update with momentum neutral, flattening N-D
        X = M.reshape_for_muon(G, "flatten")[0] if G.ndim >= 3 else G
        O = M.zeropower_via_newtonschulz(X, 5, YOU)
        return O.reshape(G.shape).to(G.dtype) * M.get_lr_scale(O.shape, "match_rms_adamw")
    claim = Claim.from_preset("you_ns5", eps_form="clamp", scale="moonlight", nd="flatten")
    assert check(update, "update", claim=claim, array_type="torch").exit_code == 0


# -- the optimizer level -------------------------------------------------------------------------

TIMM_CLAIM = ["--preset", "you_ns5", "--set", "eps_form=clamp", "--scale", "moonlight"]


def test_timm_muon_conforms_and_a_planted_table_is_caught(capsys, monkeypatch, tmp_path):
    M = _timm_muon()
    mod = tmp_path / "timm_target.py"
    mod.write_text("from timm.optim.muon import Muon\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # faithful: every property passes -- the 3-D probe's every side is >= 4, as timm's
    # _is_suitable_for_muon wants (a (3, 8, 16) stack went to its AdamW fallback: FAIL)
    code, res = _optimizer(["timm_target:Muon", *TIMM_CLAIM], capsys)
    assert code == 0 and res["stacked_3d"]["status"] == "pass", res
    assert M.Muon.__init__.__defaults__  # the class the path names is timm's
    # Keller's table instead of the quintic one (timm's ns_coefficients='original')
    code, res = _optimizer(["timm_target:Muon", *TIMM_CLAIM, "--kwarg",
                            "ns_coefficients='original'"], capsys)
    assert code == 1 and res["one_step_wide"]["status"] == "FAIL", res
    # the original Muon scale rule under a match_rms_adamw claim: the rule is named
    code, res = _optimizer(["timm_target:Muon", *TIMM_CLAIM, "--kwarg",
                            "adjust_lr_fn='original'"], capsys)
    assert code == 1 and "matches: scale keller" in res["one_step_tall"]["message"], res


def test_timm_muon_is_identified(monkeypatch, tmp_path):
    _timm_muon()
    from swanref.verify.optimizer_identify import identify_optimizer
    mod = tmp_path / "timm_target2.py"
    mod.write_text("from timm.optim.muon import Muon\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = identify_optimizer("timm_target2:Muon")
    c = r.claim
    # before: "cubic, float32, a cautious gate, GradNorm first" (every knob was searched at
    # float32, where no probe of a bfloat16 optimizer can pass), then float16
    assert r.match and (c.preset, c.compute_dtype, c.scale, c.scale_factor, c.nesterov) == (
        "you_ns5", "bfloat16", "moonlight", 1.0, "on"), r.summary()


MOONLIGHT = "corpus.moonlight_muon:Muon"
MOONLIGHT_CLAIM = ["--preset", "muon_ns5", "--scale", "moonlight", "--set", "nd=2d_only"]


def test_moonlight_muon_conforms_and_planted_bugs_are_caught(capsys, monkeypatch):
    pytest.importorskip("torch")
    code, res = _optimizer([MOONLIGHT, *MOONLIGHT_CLAIM], capsys)
    assert code == 0, res
    # Nesterov switched off under the claim's (default) Nesterov
    code, res = _optimizer([MOONLIGHT, *MOONLIGHT_CLAIM, "--kwarg", "nesterov=False"], capsys)
    assert code == 1 and res["nesterov"]["status"] == "FAIL", res
    # a clamped epsilon where the source adds it (the eps/2 probe of eps_small_gradient)
    code, res = _optimizer([MOONLIGHT, *MOONLIGHT_CLAIM, "--set", "eps_form=clamp"], capsys)
    assert code == 1 and "matches: eps 1e-07 (add)" in res["eps_small_gradient"]["message"]
    # the weight decay taken with the shape-adjusted learning rate (Moonlight's paper adjusts
    # both; its code decays with the plain lr).  (The transpose of tall matrices is no such
    # bug: X p(X^T X) = p(X X^T) X, it only changes the rounding -- accepted, rightly.)
    code, res = _optimizer([MOONLIGHT, *MOONLIGHT_CLAIM], capsys)
    from corpus import moonlight_muon as ML
    step = ML.Muon.step

    def decays_with_adjusted_lr(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and self.state[p]["use_muon"]:
                    ratio = self.adjust_lr_for_muon(1.0, p.shape)
                    p.data.mul_((1 - group["lr"] * ratio * group["wd"])
                                / (1 - group["lr"] * group["wd"]))
        return step(self, closure)
    monkeypatch.setattr(ML.Muon, "step", decays_with_adjusted_lr)
    code, res = _optimizer([MOONLIGHT, *MOONLIGHT_CLAIM], capsys)
    assert code == 1 and res["one_step_wide"]["status"] == "FAIL", res


def test_moonlight_muon_is_identified():
    pytest.importorskip("torch")
    from swanref.verify.optimizer_identify import identify_optimizer
    r = identify_optimizer(MOONLIGHT)
    c = r.claim
    assert r.match and (c.preset, c.compute_dtype, c.eps, c.eps_form, c.scale, c.nd,
                        c.nesterov) == ("muon_ns5", "bfloat16", 1e-7, "add", "moonlight",
                                        "2d_only", "on"), r.summary()
