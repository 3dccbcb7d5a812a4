"""``swanref train-demo``: a tiny run trains, writes its artefacts, and reports honest memory.

Also checks the pieces the demo is built from: the backpropagation (finite differences) and
that the SWAN optimizer applies exactly ``swanref.swan_update`` to the SWAN-routed matrices.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import swanref  # noqa: E402
from swanref import cli  # noqa: E402
from swanref.tools import demo  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = demo.run(str(out), steps=60, quick=True, seeds=1, progress=io.StringIO())
    return out, summary


def _curves(out):
    with open(out / "curves.csv") as f:
        return list(csv.DictReader(f))


def test_files(tiny):
    out, _ = tiny
    for name in ("loss_curves.png", "loss_curves.svg", "curves.csv", "tuning.csv",
                 "demo.json", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "loss_curves.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    md = (out / "summary.md").read_text()
    assert "loss_curves.png" in md and "What this run shows" in md
    data = json.loads((out / "demo.json").read_text())
    assert set(data["summary"]) == {"SWAN", "Adam", "SGD"} and data["verdict"]


def test_swan_loss_decreases(tiny):
    out, summary = tiny
    rows = [r for r in _curves(out) if r["optimizer"] == "SWAN"]
    losses = np.array([float(r["train_loss"]) for r in rows])
    assert len(losses) == 60 and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.8 * losses[:5].mean()
    assert summary["SWAN"]["final_train_loss_mean"] < summary["SWAN"]["first_train_loss"]
    assert summary["SWAN"]["diverged_runs"] == 0


def test_optimizer_state_memory(tiny):
    _, summary = tiny
    params = demo.init_params(0)
    total = sum(v.nbytes for v in params.values())
    adam_routed = sum(v.nbytes for k, v in params.items()
                      if swanref.swan_route(k, v.shape) == "adam")
    assert summary["SWAN"]["state_bytes_swan_routed"] == 0
    assert summary["SWAN"]["state_bytes"] == 2 * adam_routed
    assert summary["Adam"]["state_bytes"] == 2 * total
    assert summary["SGD"]["state_bytes"] == 0
    for k in ("fc1.weight", "fc2.weight"):
        assert swanref.swan_route(k, params[k].shape) == "swan"
        assert summary["SWAN"]["state_per_param"][k] == 0


def test_lr_tuned_on_the_grid(tiny):
    out, summary = tiny
    with open(out / "tuning.csv") as f:
        tuning = list(csv.DictReader(f))
    for name, s in summary.items():
        tried = [float(t["lr"]) for t in tuning if t["optimizer"] == name]
        assert tried == s["grid"] and s["lr"] in tried
        best = min((float(t["val_loss"]), float(t["lr"])) for t in tuning
                   if t["optimizer"] == name)
        assert s["lr"] == best[1]
    assert f"{summary['SWAN']['lr']:g}" in (out / "summary.md").read_text()


def test_backprop_matches_finite_differences():
    rng = np.random.default_rng(0)
    p = demo.init_params(3)
    X, y = demo.Teacher().sample(rng, 16)
    _, g, _ = demo.loss_and_grads(p, X, y)
    for k in p:
        idx = tuple(rng.integers(0, s) for s in p[k].shape)
        h = 1e-6
        p[k][idx] += h
        up = demo.loss_and_grads(p, X, y, need_grads=False)[0]
        p[k][idx] -= 2 * h
        down = demo.loss_and_grads(p, X, y, need_grads=False)[0]
        p[k][idx] += h
        assert abs((up - down) / (2 * h) - g[k][idx]) < 1e-6, k


def test_swan_optimizer_applies_swan_update_and_adam_elsewhere():
    rng = np.random.default_rng(1)
    p = demo.init_params(0)
    p0 = {k: v.copy() for k, v in p.items()}
    X, y = demo.Teacher().sample(rng, 64)
    _, g, _ = demo.loss_and_grads(p, X, y)
    opt = demo.SWAN(p, lr=0.01)
    opt.step(p, g)
    for k in ("fc1.weight", "fc2.weight"):
        np.testing.assert_allclose(p[k], p0[k] - swanref.swan_update(g[k], lr=0.01),
                                   rtol=0, atol=1e-14)
    # Adam's first step is lr * g / (|g| + eps): about lr * sign(g)
    d = p0["output_head.weight"] - p["output_head.weight"]
    big = np.abs(g["output_head.weight"]) > 1e-4
    np.testing.assert_allclose(d[big], 0.01 * np.sign(g["output_head.weight"][big]), rtol=1e-3)


def test_cli_entry_point(tmp_path, capsys):
    assert cli.main(["train-demo", str(tmp_path), "--quick", "--steps", "20"]) == 0
    assert "swanref training demo" in capsys.readouterr().out
    assert (tmp_path / "loss_curves.png").exists()


def test_loss_axis_has_readable_ticks():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 500, 1000], [2.6, 1.1, 0.72])  # the demo's range
    demo.style_loss_axis(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert ax.get_yscale() == "linear" and len(ticks) >= 4
    plt.close(fig)
