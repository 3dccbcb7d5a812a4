"""``swanref train-demo``: train a small MLP in pure NumPy with SWAN, Adam and SGD.

    swanref train-demo OUTDIR [--steps N] [--quick] [--seeds S]

The task is generated in code (no network): inputs x ~ N(0, I_32), labels from a random
"teacher" network (argmax of 10 logits of a tanh MLP), 8192 training and 2048 test points.
The student is a 2-hidden-layer ReLU MLP: ``fc1`` (64 x 32), ``fc2`` (64 x 64),
``output_head`` (10 x 64) and three biases, float64.

Optimizers, same budget (steps, batch size, data order, initialisation):

- **SWAN** (spec 4): every parameter routed to ``"swan"`` by :func:`swanref.swan_route`
  (here fc1 and fc2) is updated with ``W -= swanref.swan_update(G, lr=lr)`` (stateless);
  the rest (output head, biases) with Adam at the same lr;
- **Adam** (beta 0.9 / 0.999, eps 1e-8) on everything;
- **SGD** (plain, no momentum) on everything.

Each optimizer's lr is picked from a small grid by the validation loss at the end of a run
with a separate tuning seed; the final runs use other seeds.  Writes ``loss_curves.png`` /
``.svg``, ``curves.csv``, ``tuning.csv``, ``demo.json`` and ``summary.md`` to OUTDIR.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

from swanref import ops as api
from swanref.spec.errors import DivergenceWarning
from swanref.spec.routing import swan_route
from swanref.tools.progress import bar
from swanref.tools.threads import limit_blas_threads
from swanref import __version__
from swanref.spec.output_files import open_output

D_IN, HIDDEN, CLASSES = 32, 64, 10
BATCH = 128
LR_GRIDS = {
    "SWAN": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "Adam": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "SGD": [0.01, 0.03, 0.1, 0.3, 1.0],
}
OPTIMIZERS = ("SWAN", "Adam", "SGD")


# -- data and model --------------------------------------------------------------------------

class Teacher:
    """A random tanh network that labels Gaussian inputs: the task, generated in code.

    Every training step draws a fresh batch (online learning: no data set to overfit), so the
    training loss estimates the test loss; fixed validation (for lr tuning) and test sets are
    drawn with their own seeds.
    """

    def __init__(self, seed=1234, hidden=96):
        rng = np.random.default_rng(seed)
        self.W1 = rng.standard_normal((hidden, D_IN)) / math.sqrt(D_IN)
        self.W2 = rng.standard_normal((CLASSES, hidden)) * 2.0 / math.sqrt(hidden)

    def label(self, X):
        return np.argmax(np.tanh(X @ self.W1.T * 1.5) @ self.W2.T, axis=1)

    def sample(self, rng, n):
        X = rng.standard_normal((n, D_IN))
        return X, self.label(X)


def init_params(seed):
    rng = np.random.default_rng(seed)

    def he(out, inp):
        return rng.standard_normal((out, inp)) * math.sqrt(2.0 / inp)

    return {"fc1.weight": he(HIDDEN, D_IN), "fc1.bias": np.zeros(HIDDEN),
            "fc2.weight": he(HIDDEN, HIDDEN), "fc2.bias": np.zeros(HIDDEN),
            "output_head.weight": he(CLASSES, HIDDEN) * 0.5,
            "output_head.bias": np.zeros(CLASSES)}


def loss_and_grads(p, X, y, need_grads=True):
    """Mean cross-entropy and its gradients (manual backprop)."""
    a1 = X @ p["fc1.weight"].T + p["fc1.bias"]
    h1 = np.maximum(a1, 0)
    a2 = h1 @ p["fc2.weight"].T + p["fc2.bias"]
    h2 = np.maximum(a2, 0)
    z = h2 @ p["output_head.weight"].T + p["output_head.bias"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = X.shape[0]
    loss = float(-logp[np.arange(n), y].mean())
    if not need_grads:
        return loss, None, float(np.mean(np.argmax(z, axis=1) == y))
    dz = np.exp(logp)
    dz[np.arange(n), y] -= 1
    dz /= n
    g = {"output_head.weight": dz.T @ h2, "output_head.bias": dz.sum(0)}
    dh2 = dz @ p["output_head.weight"]
    da2 = dh2 * (a2 > 0)
    g["fc2.weight"] = da2.T @ h1
    g["fc2.bias"] = da2.sum(0)
    dh1 = da2 @ p["fc2.weight"]
    da1 = dh1 * (a1 > 0)
    g["fc1.weight"] = da1.T @ X
    g["fc1.bias"] = da1.sum(0)
    return loss, g, None


# -- optimizers ------------------------------------------------------------------------------

class SGD:
    def __init__(self, params, lr):
        self.lr = lr
        self.state = {}

    def step(self, p, g):
        for k in p:
            p[k] -= self.lr * g[k]


class Adam:
    def __init__(self, params, lr, names=None, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        names = list(params) if names is None else list(names)
        self.state = {k: {"m": np.zeros_like(params[k]), "v": np.zeros_like(params[k])}
                      for k in names}
        self.t = 0

    def step(self, p, g):
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, s in self.state.items():
            s["m"] = self.b1 * s["m"] + (1 - self.b1) * g[k]
            s["v"] = self.b2 * s["v"] + (1 - self.b2) * g[k] ** 2
            p[k] -= self.lr * (s["m"] / c1) / (np.sqrt(s["v"] / c2) + self.eps)


class SWAN:
    """SWAN per spec 4: swan_update on the parameters swan_route sends to "swan", Adam on
    the rest (same lr).  The SWAN-routed matrices carry no state at all."""

    def __init__(self, params, lr):
        self.lr = lr
        self.route = {k: swan_route(k, v.shape) for k, v in params.items()}
        self.adam = Adam(params, lr, names=[k for k, r in self.route.items() if r == "adam"])
        self.state = {"adam": self.adam.state}  # nothing for the SWAN-routed matrices
        self.fallbacks = 0

    def step(self, p, g):
        for k, r in self.route.items():
            if r == "swan":
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DivergenceWarning)
                    p[k] -= api.swan_update(g[k], lr=self.lr, on_divergence="fallback")
                self.fallbacks += sum(1 for w in caught
                                      if issubclass(w.category, DivergenceWarning))
        self.adam.step(p, g)


def _make_optimizer(name, params, lr):
    return {"SWAN": SWAN, "Adam": Adam, "SGD": SGD}[name](params, lr)


def state_bytes(opt, params):
    """Bytes of optimizer state, split by the parameters' SWAN routing (spec 4.2)."""
    def nbytes(tree):
        if isinstance(tree, np.ndarray):
            return tree.nbytes
        if isinstance(tree, dict):
            return sum(nbytes(v) for v in tree.values())
        return 0

    inner = opt.adam.state if isinstance(opt, SWAN) else opt.state
    per_param = {k: nbytes(inner.get(k, {})) for k in params}
    routed = {k for k in params if swan_route(k, params[k].shape) == "swan"}
    return {"total": sum(per_param.values()),
            "swan_routed": sum(v for k, v in per_param.items() if k in routed),
            "other": sum(v for k, v in per_param.items() if k not in routed),
            "per_param": per_param}


# -- training --------------------------------------------------------------------------------

def train(name, lr, steps, teacher, eval_set, seed, eval_every):
    """One run: ``steps`` fresh batches from the teacher; evaluated on ``eval_set``."""
    Xte, yte = eval_set
    params = init_params(seed)
    opt = _make_optimizer(name, params, lr)
    order = np.random.default_rng(seed + 7)
    curve, evals = [], []
    t0 = time.perf_counter()
    diverged = False
    for step in range(steps):
        Xb, yb = teacher.sample(order, BATCH)
        loss, g, _ = loss_and_grads(params, Xb, yb)
        if not math.isfinite(loss):
            diverged = True
            curve += [float("nan")] * (steps - step)
            break
        curve.append(loss)
        with np.errstate(all="ignore"):
            opt.step(params, g)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            with np.errstate(all="ignore"):
                tl, _, acc = loss_and_grads(params, Xte, yte, need_grads=False)
            evals.append((step + 1, tl, acc))
    seconds = time.perf_counter() - t0
    with np.errstate(all="ignore"):
        test_loss, _, test_acc = loss_and_grads(params, Xte, yte, need_grads=False)
    n = max(1, len(curve) // 10)
    return {"optimizer": name, "lr": lr, "seed": seed, "curve": curve, "evals": evals,
            "final_train_loss": float(np.mean(curve[-n:])) if not diverged else float("nan"),
            "test_loss": test_loss if math.isfinite(test_loss) and not diverged
            else float("nan"),
            "test_acc": test_acc, "seconds": seconds, "diverged": diverged,
            "memory": state_bytes(opt, params),
            "param_bytes": sum(v.nbytes for v in params.values()),
            "fallbacks": getattr(opt, "fallbacks", 0)}


def _fmt_bytes(b):
    return f"{b:,} B"


def run(outdir, *, steps=1000, quick=False, seeds=3, progress=None, command=None):
    """Tune, train and write every output to ``outdir``; returns the per-optimizer summary."""
    progress = sys.stderr if progress is None else progress
    os.makedirs(outdir, exist_ok=True)
    teacher = Teacher()
    n_eval = 1024 if quick else 4096
    val_set = teacher.sample(np.random.default_rng(99), n_eval)
    test_set = teacher.sample(np.random.default_rng(98), n_eval)
    grids = {k: v[1:3] for k, v in LR_GRIDS.items()} if quick else LR_GRIDS
    eval_every = max(1, steps // 20)
    total = sum(len(v) for v in grids.values()) + seeds * len(OPTIMIZERS)
    t_start = time.perf_counter()
    runs_bar = bar(total, "train-demo", progress)

    def tick(label):
        runs_bar.set_description_str(f"{label:<22}", refresh=False)
        runs_bar.update()

    tuning, chosen = [], {}
    for name in OPTIMIZERS:
        best = None
        for lr in grids[name]:
            r = train(name, lr, steps, teacher, val_set, seed=1000, eval_every=eval_every)
            val = r["test_loss"]
            tuning.append({"optimizer": name, "lr": lr, "val_loss": val,
                           "final_train_loss": r["final_train_loss"]})
            if math.isfinite(val) and (best is None or val < best[1]):
                best = (lr, val)
            tick(f"tune {name} lr={lr:g}")
        chosen[name] = best[0] if best else grids[name][0]
    runs = []
    for name in OPTIMIZERS:
        for s in range(seeds):
            runs.append(train(name, chosen[name], steps, teacher, test_set, seed=s,
                              eval_every=eval_every))
            tick(f"run {name} seed={s}")
    runs_bar.close()
    elapsed = time.perf_counter() - t_start

    # -- aggregate
    summary = {}
    for name in OPTIMIZERS:
        rs = [r for r in runs if r["optimizer"] == name]
        tl = np.array([r["test_loss"] for r in rs])
        summary[name] = {
            "lr": chosen[name], "grid": grids[name],
            "lr_at_grid_edge": chosen[name] in (grids[name][0], grids[name][-1]),
            "final_train_loss_mean": float(np.mean([r["final_train_loss"] for r in rs])),
            "test_loss_mean": float(np.mean(tl)), "test_loss_std": float(np.std(tl)),
            "test_acc_mean": float(np.mean([r["test_acc"] for r in rs])),
            "first_train_loss": float(np.mean([r["curve"][0] for r in rs])),
            "ms_per_step": float(np.mean([r["seconds"] for r in rs]) / steps * 1e3),
            "state_bytes": rs[0]["memory"]["total"],
            "state_bytes_swan_routed": rs[0]["memory"]["swan_routed"],
            "state_bytes_other": rs[0]["memory"]["other"],
            "state_per_param": rs[0]["memory"]["per_param"],
            "param_bytes": rs[0]["param_bytes"],
            "divergence_fallbacks": int(sum(r["fallbacks"] for r in rs)),
            "diverged_runs": int(sum(r["diverged"] for r in rs)),
        }
    params0 = init_params(0)
    routing = {k: swan_route(k, v.shape) for k, v in params0.items()}
    shapes = {k: list(v.shape) for k, v in params0.items()}
    config = {"steps": steps, "batch": BATCH, "seeds": seeds, "quick": quick,
              "n_train": steps * BATCH, "n_test": n_eval, "model": f"MLP {D_IN}-{HIDDEN}-"
              f"{HIDDEN}-{CLASSES} (ReLU), float64", "routing": routing, "shapes": shapes,
              "lr_grids": grids, "tuning": "lr picked by the loss on a fixed validation set "
              "(its own seed) after the full budget, tuning seed 1000; final runs on seeds "
              "0.. evaluated on a separate test set",
              "swan": "swanref.swan_update defaults (newton_schulz, 10 steps, beta 0.5, "
                      "gram_fro, rescale) on swan-routed matrices; Adam (same lr) on the rest",
              "adam": "beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected",
              "sgd": "plain, no momentum",
              "command": command or f"swanref train-demo {outdir} --steps {steps}"
                                    + (" --quick" if quick else "")}
    _write_outputs(outdir, runs, tuning, summary, config, steps, elapsed)
    return summary


def _mean_std(s, key, nseeds, digits) -> str:
    """``mean +- std over N seeds``; one seed has no spread to show (not "+- 0.0000")."""
    mean = f"{s[key + '_mean']:.{digits}f}"
    if nseeds < 2:
        return mean + " (one seed)"
    return f"{mean} +- {s[key + '_std']:.{digits}f} over {nseeds} seeds"


def _verdict(summary, nseeds):
    """An honest, number-backed statement of what the run shows."""
    order = sorted(OPTIMIZERS, key=lambda k: summary[k]["test_loss_mean"])
    best, second = order[0], order[1]
    gap = summary[second]["test_loss_mean"] - summary[best]["test_loss_mean"]
    spread = max(summary[best]["test_loss_std"], summary[second]["test_loss_std"])
    lines = []
    s = summary["SWAN"]
    if s["final_train_loss_mean"] < s["first_train_loss"]:
        lines.append(f"SWAN trains: its training loss falls from {s['first_train_loss']:.3f} "
                     f"to {s['final_train_loss_mean']:.3f} (mean of the last 10% of steps).")
    else:
        lines.append("SWAN did NOT reduce the training loss in this run.")
    head = (f"Lowest test loss: {best} ({_mean_std(summary[best], 'test_loss', nseeds, 3)}), "
            f"then {second} ({_mean_std(summary[second], 'test_loss', nseeds, 3)}); "
            f"the gap {gap:.3f} is ")
    if nseeds < 2:
        lines.append(head + "measured on one seed, so its significance is unknown.")
    elif gap > 2 * spread:
        lines.append(head + "larger than twice the seed spread.")
    else:
        lines.append(head + "within twice the seed spread: no clear winner between these two.")
    edges = [k for k in OPTIMIZERS if summary[k]["lr_at_grid_edge"]]
    if edges:
        lines.append("The chosen lr is at the edge of its grid for " + ", ".join(edges)
                     + ": a wider grid might change the ranking.")
    lines.append(
        f"Optimizer state: Adam {summary['Adam']['state_bytes']:,} B (2 x the "
        f"{summary['Adam']['param_bytes']:,} B of parameters), SWAN "
        f"{summary['SWAN']['state_bytes']:,} B, of which "
        f"{summary['SWAN']['state_bytes_swan_routed']:,} B for the SWAN-routed matrices "
        f"(the rest is Adam on the output head and biases), SGD "
        f"{summary['SGD']['state_bytes']:,} B.")
    lines.append(
        f"Cost: SWAN {summary['SWAN']['ms_per_step']:.2f} ms/step against Adam "
        f"{summary['Adam']['ms_per_step']:.2f} and SGD {summary['SGD']['ms_per_step']:.2f} "
        "(NumPy reference arithmetic on tiny matrices; the whitening dominates).")
    lines.append(
        "What it does not show: anything about large language models or the paper's "
        f"speed-up claims. This is one small synthetic task, a {len(summary['SWAN']['grid'])}"
        f"-point lr grid per optimizer, {nseeds} seed(s), float64 arithmetic; it checks that the spec's SWAN update and routing train a "
        "network end to end and that the state saving is real.")
    return lines


def style_loss_axis(ax):
    """Linear loss axis with ~6 labelled ticks: the losses span less than a factor of 4, where a
    log axis shows one or two labels."""
    from matplotlib.ticker import MaxNLocator
    ax.set_yscale("linear")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7))
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(True, alpha=0.3)


def _write_outputs(outdir, runs, tuning, summary, config, steps, elapsed):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open_output(os.path.join(outdir, "curves.csv"), newline="") as f:
        w = csv.writer(f)
        w.writerow(["optimizer", "lr", "seed", "step", "train_loss", "test_loss", "test_acc"])
        for r in runs:
            ev = {s: (tl, acc) for s, tl, acc in r["evals"]}
            for i, loss in enumerate(r["curve"]):
                tl, acc = ev.get(i + 1, ("", ""))
                w.writerow([r["optimizer"], r["lr"], r["seed"], i + 1, loss, tl, acc])
    with open_output(os.path.join(outdir, "tuning.csv"), newline="") as f:
        w = csv.writer(f)
        w.writerow(["optimizer", "lr", "val_loss", "final_train_loss"])
        for t in tuning:
            w.writerow([t["optimizer"], t["lr"], t["val_loss"], t["final_train_loss"]])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"SWAN": "C0", "Adam": "C1", "SGD": "C2"}
    win = max(1, steps // 40)
    for name in OPTIMIZERS:
        rs = [r for r in runs if r["optimizer"] == name]
        curves = np.array([r["curve"] for r in rs])
        kernel = np.ones(win) / win
        smooth = np.array([np.convolve(c, kernel, mode="valid") for c in curves])
        x = np.arange(win, steps + 1)
        axes[0].plot(x, smooth.mean(0), color=colors[name],
                     label=f"{name} (lr {summary[name]['lr']:g})")
        axes[0].fill_between(x, smooth.min(0), smooth.max(0), color=colors[name], alpha=0.2)
        ev = np.array([[e[1] for e in r["evals"]] for r in rs])
        xs = [e[0] for e in rs[0]["evals"]]
        axes[1].plot(xs, ev.mean(0), "o-", ms=3, color=colors[name],
                     label=f"{name} (lr {summary[name]['lr']:g})")
        axes[1].fill_between(xs, ev.min(0), ev.max(0), color=colors[name], alpha=0.2)
    axes[0].set_title(f"training loss (batch {BATCH}, moving average over {win} steps)")
    axes[1].set_title(f"test loss ({config['n_test']} points)")
    for ax in axes:
        style_loss_axis(ax)
        ax.legend()
    fig.suptitle(f"{config['model']}, {steps} steps, mean and min-max over "
                 f"{config['seeds']} seed(s); lr tuned per optimizer")
    fig.tight_layout()
    with open_output(os.path.join(outdir, "loss_curves.png"), "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    with open_output(os.path.join(outdir, "loss_curves.svg"), "wb") as fh:
        fig.savefig(fh, format="svg")
    plt.close(fig)

    verdict = _verdict(summary, config["seeds"])
    meta = {"command": config.get("command", ""), "seconds": elapsed,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": {"swanref": __version__, "numpy": np.__version__,
                         "python": platform.python_version(),
                         "matplotlib": matplotlib.__version__}}
    with open_output(os.path.join(outdir, "demo.json")) as f:
        json.dump({"config": config, "summary": summary, "tuning": tuning,
                   "verdict": verdict, "meta": meta,
                   "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs]},
                  f, indent=1, default=float)

    md = ["# swanref training demo", "",
          f"Generated {meta['date']} by `{config.get('command', '')}` in {elapsed:.1f} s "
          f"(swanref {__version__}, numpy {np.__version__}).", "",
          f"Model: {config['model']}; data: inputs x ~ N(0, I) labelled by a random teacher "
          f"network (generated in code), a fresh batch of {BATCH} every step ({steps} steps, "
          f"{config['n_train']} samples seen), validation and test sets of "
          f"{config['n_test']} points; {config['seeds']} seed(s) per optimizer.", "",
          "Routing (spec 4.2, `swanref.swan_route`): " + ", ".join(
              f"`{k}` {tuple(config['shapes'][k])} -> {v}" for k, v in config["routing"].items())
          + ".", "", "![loss curves](loss_curves.png)", "",
          "| optimizer | lr (grid) | final train loss | test loss | test accuracy | "
          "state bytes (SWAN-routed / other / total) | ms/step |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in OPTIMIZERS:
        s = summary[name]
        md.append(f"| {name} | {s['lr']:g} ({', '.join(f'{x:g}' for x in s['grid'])}) | "
                  f"{s['final_train_loss_mean']:.4f} | "
                  f"{_mean_std(s, 'test_loss', config['seeds'], 4)} | {s['test_acc_mean']:.3f} | "
                  f"{s['state_bytes_swan_routed']:,} / {s['state_bytes_other']:,} / "
                  f"{s['state_bytes']:,} | {s['ms_per_step']:.2f} |")
    md += ["", "Tuning (validation loss at the end of the budget, tuning seed):", "",
           "| optimizer | lr | validation loss |", "| --- | --- | --- |"]
    md += [f"| {t['optimizer']} | {t['lr']:g} | {t['val_loss']:.4f} |" for t in tuning]
    md += ["", "## What this run shows", ""] + [f"- {x}" for x in verdict] + [
        "", "Files: `loss_curves.png`/`.svg`, `curves.csv` (every step), `tuning.csv`, "
        "`demo.json` (configuration, summary, per-run results).", ""]
    with open_output(os.path.join(outdir, "summary.md")) as f:
        f.write("\n".join(md))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="swanref train-demo",
        description="train a small NumPy MLP with SWAN, Adam and SGD; plots and a summary")
    parser.add_argument("outdir", metavar="OUTDIR",
                        help="output folder (created if missing; files in it are overwritten)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default 1000; --quick 80)")
    parser.add_argument("--quick", action="store_true",
                        help="small data, 2-point lr grids, 1 seed")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per optimizer for the final runs (default 3; --quick 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1; 0 leaves the BLAS default)")
    args = parser.parse_args(argv)
    steps = args.steps or (80 if args.quick else 1000)
    seeds = args.seeds or (1 if args.quick else 3)
    if steps < 1 or seeds < 1:
        parser.error("--steps and --seeds must be positive")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("swanref train-demo: needs matplotlib (pip install 'swanref[plot]')",
              file=sys.stderr)
        return 2
    limiter = limit_blas_threads(args.threads)
    command = "swanref train-demo " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        run(args.outdir, steps=steps, quick=args.quick, seeds=seeds, command=command)
    finally:
        if limiter is not None:
            limiter.unregister()
    with open(os.path.join(args.outdir, "summary.md")) as f:
        print(f.read())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
