"""Compare swanref's bf16 emulation (swanref.presets.lowprec / presets emulate='bfloat16') with real
PyTorch bf16 eager on a CUDA GPU.  One short batched run (docs/presets.md, section 6).

    python tests/device/gpu_check.py [--no-torch]

Inputs are built with NumPy from fixed seeds on this side and fed to both: the GPU (torch eager,
bf16) and the emulation (NumPy, float32 containers).  For each preset and input it prints the
difference in bf16 ulps, the Frobenius distances to the float64 reference path, and the output
band / spurious singular values of both.  Writes $OUT/gpu_check.json when $OUT is set.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
# import swanref.presets / swanref.presets.lowprec without the package __init__ (no scipy needed)
_pkg = types.ModuleType("swanref")
_pkg.__path__ = [str(ROOT / "swanref")]
sys.modules.setdefault("swanref", _pkg)
from swanref.presets import lowprec as bf16  # noqa: E402
from swanref.presets import catalogue as presets  # noqa: E402

KELLER = (3.4445, -4.7750, 2.0315)


def make_inputs():
    out = {}
    rng = np.random.default_rng(20261122)
    out["gauss_512x2048"] = rng.standard_normal((512, 2048))
    out["gauss_1024x1024"] = rng.standard_normal((1024, 1024))
    out["tall_1536x384"] = rng.standard_normal((1536, 384))
    out["rank64_256x1024"] = rng.standard_normal((256, 64)) @ rng.standard_normal((64, 1024))
    out["batch_4x256x768"] = rng.standard_normal((4, 256, 768)) * np.array([1e-3, 1, 10, 1e3])[
        :, None, None]
    return {k: v.astype(np.float32) for k, v in out.items()}


# -- the sources, transcribed for torch (eager) --------------------------------------------------

def torch_impls(torch):
    def keller(G, steps=5, eps=1e-7, half=False):
        a, b, c = KELLER
        X = G.half() if half else G.bfloat16()
        if G.size(-2) > G.size(-1):
            X = X.mT
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
        for _ in range(steps):
            A = X @ X.mT
            B = b * A + c * A @ A
            X = a * X + B @ X
        if G.size(-2) > G.size(-1):
            X = X.mT
        return X

    def torch_muon_transcribed(G, steps=5, eps=1e-7):
        a, b, c = (3.4445, -4.775, 2.0315)
        X = G.bfloat16()
        if G.size(0) > G.size(1):
            X = X.T
        X = X.div(X.norm().clamp(min=eps))
        for _ in range(steps):
            gram = X @ X.T
            gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            X = torch.addmm(X, gram_update, X, beta=a)
        if G.size(0) > G.size(1):
            X = X.T
        return X

    try:
        from torch.optim._muon import _zeropower_via_newtonschulz as real_zp
    except Exception:  # noqa: BLE001
        real_zp = None

    def torch_muon(G):
        if G.ndim != 2:
            return torch.stack([torch_muon(g) for g in G])
        if real_zp is not None:
            try:
                return real_zp(G, (3.4445, -4.775, 2.0315), 5, 1e-7)
            except TypeError:  # another signature: fall back to the transcription
                pass
        return torch_muon_transcribed(G)

    def pe(coeffs, scale, eps, steps):
        def f(G):
            X = G.bfloat16()
            if G.size(-2) > G.size(-1):
                X = X.mT
            X = X / (X.norm(dim=(-2, -1), keepdim=True) * scale + eps)
            hs = list(coeffs[:steps]) + [coeffs[-1]] * max(0, steps - len(coeffs))
            for a, b, c in hs:
                A = X @ X.mT
                B = b * A + c * A @ A
                X = a * X + B @ X
            if G.size(-2) > G.size(-1):
                X = X.mT
            return X
        return f

    return {
        "muon_ns5": keller,
        "muon_ns5@float16": lambda G: keller(G, half=True),
        "torch_muon": torch_muon,
        "polar_express_nanogpt": pe(presets.PE_NANOGPT5, 1 + 2e-2, 1e-6, 5),
        "polar_express": pe(presets.PE_BASIC, 1.01, 1e-7, 8),
    }, real_zp is not None


# -- metrics -----------------------------------------------------------------------------------

def ulp_stats(x, y, fmt="bfloat16"):
    """Differences of two bf16 arrays: in ulps of each entry, and in ulps of the largest."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    d = np.abs(x - y)
    mag = np.maximum(np.abs(x), np.abs(y))
    per = d / bf16.ulp(mag, fmt)
    top = d.max() / bf16.ulp(mag.max(), fmt)
    return {"equal_frac": float(np.mean(d == 0)), "le1ulp_frac": float(np.mean(per <= 1)),
            "ulps_p50": float(np.median(per)), "ulps_p99": float(np.quantile(per, 0.99)),
            "ulps_max": float(per.max()), "maxabs_in_ulps_of_max": float(top),
            "maxabs": float(d.max())}


def rel_fro(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300))


def svals(x, svd):
    return svd(np.asarray(x, np.float64))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    t0 = time.time()
    inputs = make_inputs()
    if "--quick" in argv:
        inputs = {k: v for k, v in inputs.items() if k == "rank64_256x1024"}
    info = {"python": platform.python_version(), "numpy": np.__version__}
    use_torch = "--no-torch" not in argv
    if use_torch:
        import torch
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        impls, real = torch_impls(torch)
        info.update(torch=torch.__version__, device=dev,
                    gpu=torch.cuda.get_device_name(0) if dev == "cuda" else None,
                    torch_muon_source="torch.optim._muon" if real else "transcribed",
                    bf16_reduced_reduction=bool(
                        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction),
                    tf32=bool(torch.backends.cuda.matmul.allow_tf32))

        def svd(a):
            t = torch.from_numpy(a).to(dev, torch.float64)
            return torch.linalg.svdvals(t).cpu().numpy()

        def run(name, G, reduced=None):
            if reduced is not None:
                old = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = reduced
            try:
                out = impls[name](torch.from_numpy(G).to(dev))
                if dev == "cuda":
                    torch.cuda.synchronize()
                return out.float().cpu().numpy()
            finally:
                if reduced is not None:
                    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = old
    else:
        def svd(a):
            return np.linalg.svd(a, compute_uv=False)
    print(json.dumps(info), flush=True)

    results = []
    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", "150"))
    for cname, G in inputs.items():
        if time.time() - t0 > budget:
            print(f"time budget {budget:g}s reached: skipping {cname}", flush=True)
            continue
        for full in ("muon_ns5", "torch_muon", "polar_express_nanogpt", "polar_express",
                     "muon_ns5@float16"):
            name, _, fmt = full.partition("@")
            fmt = fmt or "bfloat16"
            if fmt == "float16" and cname not in ("gauss_512x2048", "rank64_256x1024"):
                continue
            emu = presets.whiten_preset(G, name, emulate=fmt)
            ref = presets.whiten_preset(G.astype(np.float64), name)
            row = {"case": cname, "preset": full, "emu_vs_ref64": rel_fro(emu, ref)}
            rank = 64 if cname.startswith("rank64") else None
            s_emu = svals(emu, svd)
            row["emu_band"] = [float(s_emu.min() if rank is None else s_emu[..., :rank].min()),
                               float(s_emu.max())]
            if rank:
                row["emu_spurious"] = float(s_emu[..., rank])
            if use_torch:
                try:
                    gpu = run(full, G)
                    if not bf16.is_representable(gpu, fmt):
                        row["gpu_not_representable"] = True
                    row.update({"gpu_vs_emu": ulp_stats(gpu, emu, fmt),
                                "gpu_vs_emu_fro": rel_fro(gpu, emu),
                                "gpu_vs_emu_fro_max_slice": max(
                                    rel_fro(a, b) for a, b in zip(
                                        gpu.reshape((-1,) + gpu.shape[-2:]),
                                        emu.reshape((-1,) + emu.shape[-2:]))),
                                "gpu_vs_ref64": rel_fro(gpu, ref)})
                    s_gpu = svals(gpu, svd)
                    row["gpu_band"] = [float(s_gpu.min() if rank is None
                                             else s_gpu[..., :rank].min()), float(s_gpu.max())]
                    if rank:
                        row["gpu_spurious"] = float(s_gpu[..., rank])
                    if name == "muon_ns5" and cname == "gauss_512x2048":
                        g2 = run(full, G, reduced=False)
                        row["gpu_noreduced_vs_emu"] = ulp_stats(g2, emu)
                        row["gpu_noreduced_vs_gpu"] = ulp_stats(g2, gpu)
                except Exception as exc:  # noqa: BLE001 - keep the single run going
                    row["error"] = f"{type(exc).__name__}: {exc}"
            results.append(row)
            print(json.dumps(row), flush=True)
    # the emulation's own spread: float64 vs float32 summation inside the norm / products
    summary = {"info": info, "results": results, "seconds": time.time() - t0}
    if use_torch:
        ok = [r for r in results if "gpu_vs_emu_fro" in r]
        full_rank = [r for r in ok if not r["case"].startswith("rank")]
        if full_rank:
            summary["max_gpu_vs_emu_fro_full_rank"] = max(
                r["gpu_vs_emu_fro_max_slice"] for r in full_rank)
            summary["max_gpu_vs_emu_maxabs_ulps_of_max_full_rank"] = max(
                r["gpu_vs_emu"]["maxabs_in_ulps_of_max"] for r in full_rank)
        if ok:
            summary["max_ratio_gpu_emu_err_vs_ref64"] = max(
                abs(r["gpu_vs_ref64"] / r["emu_vs_ref64"] - 1) for r in ok)
    print("SUMMARY " + json.dumps({k: v for k, v in summary.items() if k != "results"}))
    out = os.environ.get("OUT")
    if out:
        pathlib.Path(out, "gpu_check.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
