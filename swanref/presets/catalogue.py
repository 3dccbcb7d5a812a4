"""Production Muon-style orthogonalizers ("presets"), each faithful to its source.

Every preset approximates the polar factor ``U V^T`` of ``G = U S V^T`` by ``U p(S) V^T`` with
``p`` a composition of odd polynomials ``x -> a x + b x^3 + c x^5``, after a Frobenius-type
normalisation.  What differs between the implementations people copy -- and what each preset
here reproduces exactly -- is the normalisation (where the epsilon goes, extra safety factor),
the coefficient schedule, what happens after the schedule runs out, the transpose rule for tall
input, the association of the matrix products, and the compute dtype.  docs/presets.md gives the
source (repository, file, commit) of each, and the table of known-defect behaviour that
tests/test_presets.py checks.

Precision: by default a preset runs in the input's dtype (float32 or float64): the *reference
path*, the source's arithmetic without its forced downcast.  ``emulate="bfloat16"`` (or
"float16") runs it with the rounding of PyTorch eager on a GPU (:mod:`swanref.presets.lowprec`);
``emulate="source"`` picks the dtype the source itself computes in.

"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from swanref.presets.lowprec import Arith
from swanref.spec.scaling import pow2_exponent
from swanref.spec.validate import (MAX_ITERATIONS, clear_keyword_errors, flag,
                                   host_matrix_stack, iteration_count, nonfinite_error)

__all__ = ["Preset", "PRESETS", "ROUTES", "PE_GRAM5", "check_coefficients", "check_emulate",
           "whiten_preset", "schedule", "get_preset",
           "KELLER_NS5", "YOU_NS5", "PE_NANOGPT5", "PE_BASIC_RAW", "PE_BASIC", "JIACHENG6",
           "DEEPSEEK_V4", "CUBIC", "PROVENANCE", "PTOPT_PE8", "EMERGING_PE8"]

# -- coefficient tables (a, b, c): x -> a x + b x^3 + c x^5 ---------------------------------

#: Keller Jordan's quintic, KellerJordan/Muon muon.py; also torch.optim.Muon's default.
KELLER_NS5 = ((3.4445, -4.7750, 2.0315),)

#: You Jiacheng's 5 triples, microsoft/dion dion/newton_schulz_triton.py.
YOU_NS5 = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)

#: Polar Express, 5 steps, as shipped by modded-nanogpt / dion / nanochat ("Computed for
#: num_iters=5, safety_factor=2e-2, cushion=2"); the 1.02 safety factor is already divided
#: into all but the last polynomial.  swanref.presets.schedules regenerates them.
PE_NANOGPT5 = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)

#: Polar Express raw table of NoahAmsel/PolarExpress polar_express/basic.py (before its 1.01
#: safety factor); the last triple is the limit (15/8, -10/8, 3/8), used for all later steps.
PE_BASIC_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
#: ... and with the safety factor applied as basic.py does it (float64, all but the last).
PE_BASIC = tuple((a / 1.01, b / 1.01 ** 3, c / 1.01 ** 5) for (a, b, c) in PE_BASIC_RAW[:-1]) \
    + (PE_BASIC_RAW[-1],)

#: You Jiacheng's 6-step set (k/1024), modula-systems/modula orthogonalize.
JIACHENG6 = (
    (3955 / 1024, -8306 / 1024, 5008 / 1024),
    (3735 / 1024, -6681 / 1024, 3463 / 1024),
    (3799 / 1024, -6499 / 1024, 3211 / 1024),
    (4019 / 1024, -6385 / 1024, 2906 / 1024),
    (2677 / 1024, -3029 / 1024, 1162 / 1024),
    (2172 / 1024, -1833 / 1024, 682 / 1024),
)

#: DeepSeek-V4 hybrid: 8 x Keller then 2 x the classical quintic-free (2, -1.5, 0.5).
DEEPSEEK_V4 = KELLER_NS5 * 8 + ((2.0, -1.5, 0.5),) * 2

#: Classical cubic Newton-Schulz x -> 1.5 x - 0.5 x^3 (Higham 2008, eq. 5.22, polar form).
CUBIC = ((1.5, -0.5, 0.0),)

#: pytorch-optimizer 4.1.0 NS_COEFFICIENTS['polar_express'] (optimizer/utils/matrix.py):
#: optimal_composition(1e-3, 8, safety_factor_eps=1e-2, cushion=0.02), the literal reading of
#: basic.py's comment (safety inside the recurrence); not PE_BASIC.
PTOPT_PE8 = (
    (8.237312490495555, -23.157747414558198, 16.680568411445915),
    (4.082441999064835, -2.893047735332586, 0.5252849256975648),
    (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
    (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
    (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
    (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
    (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
    (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
)

#: emerging-optimizers 0.3.0 _COEFFICIENT_SETS['polar_express'] (muon_utils.py): PE_BASIC to 4
#: decimals, except 8.2051 (PE_BASIC's 8.20516 rounds to 8.2052).
EMERGING_PE8 = (
    (8.2051, -22.9019, 16.4607), (4.0664, -2.8612, 0.5184), (3.9096, -2.8234, 0.5250),
    (3.2856, -2.4153, 0.4853), (2.2779, -1.6198, 0.3985), (1.8726, -1.2307, 0.3585),
    (1.8564, -1.2132, 0.3568), (1.8750, -1.2500, 0.3750),
)


@dataclass(frozen=True)
class Preset:
    """One production orthogonalizer, described by what distinguishes it from the others.

    norm:       'add'   X / (||X||_F * norm_scale + eps)          (Keller, PE, dion, optax)
                'clamp' X / max(||X||_F * norm_scale, eps)        (torch.optim.Muon, NeMo)
                'none'  X / ||X||_F, no guard: zero -> NaN         (modula)
                'safe'  X / ||X||_F, zero matrix -> 0              (classical cubic, swanref)
    transpose:  'to_wide' work on the wide orientation, A = X X^T, X <- a X + B X
                'to_tall' work on the tall orientation, A = X^T X, X <- X (a I + B)  (modula)
                'none'    never transpose (A = X X^T even for tall X; a variant, no source)
    form:       'keller'  A = X X^T; B = b A + (c A) A; X = a X + B X   (separate eager ops)
                'addmm'   B = addmm(A, A, A, beta=b, alpha=c); X = addmm(X, B, X, beta=a)
                'right'   P = a I + b A + (c A) A; X = X P             (to_tall only)
                'coupled' SWAN's Gram-form coupled iteration (cubic schedule only)
    after:      what steps beyond the table do: 'repeat' the last triple, or 'error'
    compute_dtype: what the source computes in: 'bfloat16', 'float16', 'float32', 'input'
    zero:       what the source returns for the zero matrix: '0' or 'nan'

    Hybrid and preconditioned routes (:data:`ROUTES`, spec 9.6) add:
    norm 'aol'    no Frobenius normalisation; the first step rescales X <- D X, A <- D A D with
                  D = diag(1/sqrt(max(sum_j |A_ij|, eps))) (Almost-Orthogonal-Layer), A = X X^H
    form 'gram'   Gram Newton-Schulz: iterate on R = X X^H and Q = polynomial in R, X <- Q X
                  only at the restarts in extra['resets'] and at the end (same function as
                  'addmm' in exact arithmetic)
    form 'horner' X <- ((c A + b I) A + a I) X                            (heavyball)
    route 'svd_square' square matrices take the exact polar factor U V^H (thin SVD), the
                  others the polynomial
    Complex input (complex64/complex128, no emulation) uses conjugate transposes throughout.
    """
    name: str
    coefficients: tuple
    steps: int
    norm: str
    eps: float
    norm_scale: float = 1.0
    transpose: str = "to_wide"
    form: str = "keller"
    after: str = "repeat"
    compute_dtype: str = "bfloat16"
    max_steps: int | None = None
    batched_in_source: bool = True
    zero: str = "0"
    norm_over: str = "matrix"      # 'matrix' (last two axes) or 'all' (whole array: old Keller)
    #: low precision (the claim knob of the same name, spec 9.7): 'cast_then_normalise' casts G
    #: to the compute format and normalises there (Keller, torch.optim.Muon);
    #: 'normalise_then_cast' normalises in float32 and then casts (Dao-AILab
    #: gram-newton-schulz, heavyball, DiffSinger#301); no effect without emulation
    lowprec_order: str = "cast_then_normalise"
    source: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)
    route: str = "ns"


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("muon_ns5", KELLER_NS5, 5, "add", 1e-7,
           source="KellerJordan/Muon muon.py @857d1adc zeropower_via_newtonschulz5",
           notes="bf16 throughout; per-matrix norm over dims (-2,-1) since eb22579"),
    Preset("torch_muon", KELLER_NS5, 5, "clamp", 1e-7, form="addmm", max_steps=99,
           batched_in_source=False,
           source="pytorch/pytorch torch/optim/_muon.py @b5ee4d7a _zeropower_via_newtonschulz",
           notes="source: 2-D only, ns_steps < 100; here batches run slice by slice"),
    Preset("polar_express", PE_BASIC, 8, "add", 1e-7, norm_scale=1.01,
           source="NoahAmsel/PolarExpress polar_express/basic.py @7f0fb573 PolarExpress",
           notes="8 distinct quintics (1.01 safety on the first 7), last one repeats; the "
                 "source has no default step count, 8 here runs every distinct polynomial"),
    Preset("polar_express_nanogpt", PE_NANOGPT5, 5, "add", 1e-6, norm_scale=1 + 2e-2,
           after="error",
           source="KellerJordan/modded-nanogpt train_gpt.py @f411b3d3 polar_express (same "
                  "coefficients in microsoft/dion dion/polar_express.py @0a059a45, nanochat)",
           notes="pure-torch form; the speedrun's Triton symmetric kernels round differently"),
    Preset("you_ns5", YOU_NS5, 5, "add", 1e-7, after="error",
           source="microsoft/dion dion/newton_schulz_triton.py @0a059a45 "
                  "zeropower_via_newtonschulz5 (You Jiacheng's coefficients)"),
    Preset("jiacheng6", JIACHENG6, 6, "none", 0.0, transpose="to_tall", form="right",
           after="error", compute_dtype="float32", batched_in_source=False, zero="nan",
           source="modula-systems/modula @ede2ba72 orthogonalize (JAX)",
           notes="no epsilon: the zero matrix gives NaN"),
    Preset("deepseek_v4", DEEPSEEK_V4, 10, "add", 1e-7, after="error",
           source="DeepSeek-V4 hybrid as described in microsoft/dion#67 and Paddle#78916 "
                  "[ISSUE]; normalisation assumed Keller's (not read in code)"),
    Preset("optax_muon", KELLER_NS5, 5, "add", 1e-8, compute_dtype="input",
           batched_in_source=False,
           source="google-deepmind/optax optax/contrib/_muon.py @2edbcbe2 "
                  "orthogonalize_via_newton_schulz, ns_coeffs='standard', preconditioning="
                  "'frobenius'"),
    Preset("nemo_polar_express", EMERGING_PE8, 5, "clamp", 1e-15, form="addmm",
           compute_dtype="float32",
           source="NVIDIA-NeMo/Emerging-Optimizers muon_utils.newton_schulz @fd772926, "
                  "coefficient_type='polar_express' (F.normalize, eps=1e-15; the 4-decimal "
                  "table of ba5196b/#74, addmm steps)",
           notes="fp32 unless float32_matmul_precision='medium'; 2-D/3-D in source; the same "
                 "table as emerging_polar_express, eps 1e-15 since 7ebd3cf (#230)"),
    Preset("cubic", CUBIC, 10, "safe", 0.0, compute_dtype="input",
           source="classical Newton-Schulz for the polar factor (Higham 2008, eq. 5.22; "
                  "modula docs newton-schulz.rst)",
           notes="equals whiten(method='newton_schulz', beta=0.5, scaling='grad_fro') "
                 "in exact arithmetic"),
    Preset("swan_coupled", CUBIC, 10, "safe", 0.0, form="coupled", compute_dtype="input",
           source="SWAN GradWhitening as swanref's whiten(method='newton_schulz', beta=0.5, "
                  "scaling='grad_fro'): coupled Newton-Schulz on A = G G^T / ||G||_F^2 "
                  "(Ma et al. 2024 Alg. 2; Higham 2008 eq. 6.35)",
           notes="equals cubic in exact arithmetic; in bf16 its Z grows like 1.5^k "
                 "on null directions and diverges"),
    Preset("ptopt_polar_express", PTOPT_PE8, 8, "clamp", 1e-7, form="addmm",
           source="pytorch-optimizer 4.1.0 pytorch_optimizer/optimizer/utils/matrix.py "
                  "zero_power_via_newton_schulz_5(weights=NS_COEFFICIENTS['polar_express'], "
                  "num_steps=8)",
           notes="its own Polar Express table (optimal_composition(1e-3, 8, 1e-2, 0.02): the "
                 "safety inside the recurrence, up to 1.3% from polar_express's), no factor on "
                 "the norm, clamp 1e-7; output in its dtype argument (bf16 by default)"),
    Preset("emerging_polar_express", EMERGING_PE8, 5, "clamp", 1e-7, form="addmm",
           compute_dtype="float32",
           source="emerging-optimizers 0.3.0 emerging_optimizers/orthogonalized_optimizers/"
                  "muon_utils.py newton_schulz(coefficient_type='polar_express', steps=5)",
           notes="polar_express's table rounded to 4 decimals (8.2051 truncated), F.normalize "
                 "eps 1e-7 (clamp); float32 only, 2-D/3-D; bf16 iff matmul precision 'medium'"),
    Preset("heavyball_msign", PE_BASIC, 10, "clamp", 1e-7, form="horner", lowprec_order="normalise_then_cast",
           source="heavyball 3.2.1 heavyball/utils.py msign(G, steps=10) (ABC_LIST_STABLE)",
           notes="polar_express's table without the 1.01 on the norm, 10 steps (last repeats), "
                 "X <- (a I + (b I + c S) S) X; float32 input stochastically rounded to bf16 "
                 "(not emulated), float64 exact"),
    Preset("custom", (), 0, "add", 1e-7, compute_dtype="input",
           source="user-supplied coefficients=[(a, b, c), ...] with Keller's normalisation; "
                  "steps default to len(coefficients), the last triple repeats"),
]}

#: Polar Express with Dao-AILab/gram-newton-schulz's 1.05 safety factor (coefficients.py):
#: the raw basic.py table's first five triples, (a/1.05, b/1.05^3, c/1.05^5).
PE_GRAM5 = tuple((a / 1.05, b / 1.05 ** 3, c / 1.05 ** 5) for (a, b, c) in PE_BASIC_RAW[:5])

#: Hybrid and preconditioned routes in real use (spec 9.6).  Kept apart from PRESETS: the
#: preset diagnosis compares implementations with PRESETS only.
ROUTES: dict[str, Preset] = {p.name: p for p in [
    Preset("gram_ns", PE_GRAM5, 5, "add", 1e-7, form="gram", after="error",
           compute_dtype="float16", extra={"resets": (2,)}, lowprec_order="normalise_then_cast",
           source="Dao-AILab/gram-newton-schulz gram_newton_schulz/gram_newton_schulz.py "
                  "@1cb3c152 GramNewtonSchulz (coefficients.py POLAR_EXPRESS_COEFFICIENTS, "
                  "safety 1.05; gram_newton_schulz_reset_iterations=[2])",
           notes="normalises in float32, iterates in float16; square input takes the "
                 "standard (baddbmm) iteration, rectangular the Gram form"),
    Preset("optax_muon_aol", KELLER_NS5, 5, "aol", 1e-8, compute_dtype="input", batched_in_source=False,
           source="google-deepmind/optax optax/contrib/_muon.py (optax 0.2.8) "
                  "orthogonalize_via_newton_schulz(preconditioning='aol'): "
                  "_aol_first_newton_schulz_iteration, then the base quintic",
           notes="no Frobenius normalisation; D A D (not D^2 A) in the first step"),
    Preset("heavyball_svd", YOU_NS5, 5, "clamp", 1e-7, form="horner", after="error",
           route="svd_square", compute_dtype="bfloat16", lowprec_order="normalise_then_cast",
           source="HomebrewML/HeavyBall heavyball/utils.py (heavyball 3.2.1) "
                  "_compilable_orthogonal_(mode='svd'): torch.linalg.svd U @ Vh for square "
                  "matrices, zeropower_via_newtonschulz5 (You's 5 quintics) otherwise",
           notes="the source's bf16 cast is stochastic rounding (not emulated); its "
                 "mode='legacy_svd' returns U @ Vh.T, not a polar factor"),
    Preset("heavyball_ns5", YOU_NS5, 5, "clamp", 1e-7, form="horner", after="error",
           compute_dtype="bfloat16", lowprec_order="normalise_then_cast",
           source="HomebrewML/HeavyBall heavyball/utils.py (heavyball 3.2.1) "
                  "zeropower_via_newtonschulz5 (the default zeroth_power_mode 'newtonschulz')",
           notes="float64 input runs exactly in float64; float32 is stochastically rounded to "
                 "bf16 (not emulated)"),
]}

#: where each preset comes from: (package or repository, version or commit, function); the
#: packages' rows were checked against the installed releases (docs/presets.md, conformance.md)
PROVENANCE = {
    "muon_ns5": ("KellerJordan/Muon (GitHub)", "@857d1adc", "muon.py zeropower_via_newtonschulz5"),
    "torch_muon": ("torch", "2.14.1 (source @b5ee4d7a)",
                   "torch.optim._muon._zeropower_via_newtonschulz"),
    "polar_express": ("NoahAmsel/PolarExpress (GitHub)", "@7f0fb573",
                      "polar_express/basic.py PolarExpress"),
    "polar_express_nanogpt": ("KellerJordan/modded-nanogpt (GitHub)", "@f411b3d3",
                              "train_gpt.py polar_express (also microsoft/dion, nanochat)"),
    "you_ns5": ("microsoft/dion (GitHub)", "@0a059a45",
                "dion/newton_schulz_triton.py zeropower_via_newtonschulz5"),
    "jiacheng6": ("modula-systems/modula (GitHub)", "@ede2ba72", "orthogonalize (JAX)"),
    "deepseek_v4": ("DeepSeek-V4 hybrid (as described; emerging-optimizers 0.3.0 "
                    "'deepseekv4' uses clamp)", "-", "-"),
    "optax_muon": ("optax", "0.2.8 (source @2edbcbe2)",
                   "optax.contrib._muon.orthogonalize_via_newton_schulz"),
    "nemo_polar_express": ("NVIDIA-NeMo/Emerging-Optimizers (GitHub main, unreleased)",
                           "@fd772926 (0.3.0 differs: emerging_polar_express)",
                           "muon_utils.newton_schulz('polar_express')"),
    "cubic": ("classical (Higham 2008 eq. 5.22)", "-", "-"),
    "swan_coupled": ("swanref (SWAN Alg. 2, coupled form)", "-",
                     "whiten(method='newton_schulz', beta=0.5, scaling='grad_fro')"),
    "ptopt_polar_express": ("pytorch-optimizer", "4.1.0",
                            "pytorch_optimizer.optimizer.utils.matrix."
                            "zero_power_via_newton_schulz_5(weights='polar_express', "
                            "num_steps=8)"),
    "emerging_polar_express": ("emerging-optimizers", "0.3.0",
                               "emerging_optimizers.orthogonalized_optimizers.muon_utils."
                               "newton_schulz(coefficient_type='polar_express', steps=5)"),
    "heavyball_msign": ("heavyball", "3.2.1", "heavyball.utils.msign(steps=10)"),
    "custom": ("user table (--coefficients FILE)", "-", "-"),
}

_EMULATE = (None, "bfloat16", "float16", "source")


def get_preset(name: str) -> Preset:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string naming a preset, got {name!r}")
    if name in ROUTES:
        return ROUTES[name]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of "
                         f"{', '.join(list(PRESETS) + list(ROUTES))}")
    return PRESETS[name]


def _check_coefficients(coefficients) -> tuple:
    try:
        triples = tuple(tuple(float(v) for v in t) for t in coefficients)
    except (TypeError, ValueError) as exc:
        raise TypeError("coefficients must be a sequence of (a, b, c) number triples") from exc
    if not triples:
        raise ValueError("coefficients must hold at least one (a, b, c) triple")
    for t in triples:
        if len(t) == 2:
            continue
        if len(t) != 3:
            raise ValueError(f"each coefficient triple must be (a, b, c); got {t}")
    triples = tuple(t if len(t) == 3 else t + (0.0,) for t in triples)
    if not all(np.isfinite(v) for t in triples for v in t):
        raise ValueError("coefficients must be finite")
    return triples


def check_coefficients(coefficients) -> tuple:
    """A coefficient table validated as (a, b, c) float triples (public form for the checker)."""
    return _check_coefficients(coefficients)


def schedule(name: str, steps=None, coefficients=None) -> tuple:
    """The (a, b, c) triple used at each step by preset ``name`` (after overrides)."""
    preset = get_preset(name)
    table = preset.coefficients
    after = preset.after
    if coefficients is not None:
        table = _check_coefficients(coefficients)
        after = "repeat"
    elif name == "custom":
        raise ValueError("preset 'custom' needs coefficients=[(a, b, c), ...]")
    if steps is None:
        steps = len(table) if name == "custom" else preset.steps
    steps = iteration_count(steps, "steps")  # before the schedule tuple is built (spec 6.5)
    if preset.max_steps is not None and steps > preset.max_steps:
        raise ValueError(f"preset {name!r}: steps must be <= {preset.max_steps} "
                         f"(the source raises), got {steps}")
    if steps > len(table) and after == "error":
        raise ValueError(f"preset {name!r} has {len(table)} coefficient triples; steps={steps} "
                         "is more than the source defines (pass coefficients= to extend)")
    return tuple(table[:steps]) + (table[-1],) * max(0, steps - len(table))


#: dtype -> (h, t): when max|G| >= 2**h the squares of the Frobenius norm can overflow, and G is
#: first multiplied by the exact power of two that brings max|G| to [2**(t-1), 2**t).  At that
#: size every preset's eps (<= 1e-6) is below half an ulp of the norm, so the result is the
#: one an overflow-free run of the source gives (spec 6.3).
_HUGE = {np.dtype(np.float32): (60, 48), np.dtype(np.float64): (500, 256)}


def polynomial_kernel_runs(preset: Preset) -> bool:
    """Does a backend's ``whiten_polynomial`` kernel compute this preset (without emulation)?

    Keller/addmm polynomial steps on the wide orientation with one norm per matrix: the C++
    core's and the GPU's kernels (tests/test_cpp_presets.py, tests/test_gpu_presets.py), and
    swanref.jax's FFI call of the same core.
    """
    return (preset.form in ("keller", "addmm") and preset.norm != "aol" and preset.route == "ns"
            and preset.transpose == "to_wide" and preset.norm_over == "matrix")


def huge_exponents(dtype):
    """(threshold, target) exponents of :func:`prescale_huge` for a float32/float64 format
    (None for another): a matrix whose max|G| = f 2**e has e > threshold is scaled by
    2**(target - e)."""
    return _HUGE.get(np.dtype(dtype))


def prescale_huge(G, whole: bool = False, fmt=None):
    """``G`` scaled by an exact power of two per matrix (whole array if ``whole``) when its
    entries are so large that the norm's squares would overflow; else ``G`` itself.

    ``fmt``: the format the preset computes in (None/'input': G's dtype; 'float32' and
    'bfloat16' share float32's range; 'float16' is left alone: its range is the source's).
    """
    G = np.asarray(G)
    if fmt == "float16":
        return G
    # complex input: the limits of its real part's format (the squares are |x|^2)
    real = np.finfo(G.dtype).dtype if G.dtype.kind in "fc" else G.dtype
    lim = _HUGE.get(np.dtype(np.float32) if fmt in ("float32", "bfloat16") else real)
    if lim is None or G.size == 0:
        return G
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(G), axis=None if whole else (-2, -1), keepdims=True)
    e = pow2_exponent(np.where(np.isfinite(amax), amax, 0))
    shift = np.where(e > lim[0], e - lim[1], 0)
    if not shift.any():
        return G
    if G.dtype.kind == "c":  # ldexp is real-only: each part on its own
        out = np.empty_like(G)
        out.real, out.imag = np.ldexp(G.real, -shift), np.ldexp(G.imag, -shift)
        return out
    return np.ldexp(G, -shift).astype(G.dtype, copy=False)


def _h(X):
    """Conjugate transpose of the matrices (the plain transpose for real X)."""
    Xt = np.swapaxes(X, -1, -2)
    return Xt.conj() if np.iscomplexobj(Xt) else Xt


def _normalise(ar: Arith, X, preset: Preset):
    if preset.norm == "aol":
        return X  # the first step rescales (_aol_step)
    if np.iscomplexobj(X):
        real = np.float64 if X.dtype == np.complex128 else np.float32
        with np.errstate(under="ignore", over="ignore"):
            nrm = np.sqrt(np.sum((X * X.conj()).real, axis=(-2, -1), keepdims=True,
                                 dtype=np.float64)).astype(real)
        if preset.norm_over == "all" and X.ndim > 2:
            nrm = np.sqrt(np.sum(nrm.astype(np.float64) ** 2)).astype(real)
        nrm = nrm * real(preset.norm_scale)
        with np.errstate(invalid="ignore", divide="ignore"):
            if preset.norm == "add":
                d = nrm + real(preset.eps)
            elif preset.norm == "clamp":
                d = np.maximum(nrm, real(preset.eps))
            elif preset.norm == "none":
                d = nrm
            else:  # safe
                return ar.r(np.where(nrm > 0, X / np.where(nrm > 0, nrm, 1), 0))
            return ar.r(X / d)
    if ar.fmt is None:
        # squares in the compute dtype (tiny float32 input underflows as in the sources), sum
        # in float64 (no overflow of the sum), as the C++ kernel does
        with np.errstate(under="ignore", over="ignore"):
            nrm = np.sqrt(np.sum(X * X, axis=(-2, -1), keepdims=True,
                                 dtype=np.float64)).astype(ar.dtype)
    else:
        nrm = ar.fro_norm(X)
    if preset.norm_over == "all" and X.ndim > 2:
        nrm = ar.r(np.sqrt(np.sum(np.asarray(nrm, np.float64) ** 2)).astype(ar.dtype))
    if preset.norm_scale != 1.0:
        nrm = ar.scale(preset.norm_scale, nrm)
    if preset.norm == "add":
        return ar.div(X, ar.add(nrm, ar.scalar(preset.eps)))
    if preset.norm == "clamp":
        return ar.div(X, ar.maximum(nrm, preset.eps))
    if preset.norm == "none":
        return ar.div(X, nrm)
    if preset.norm == "safe":
        with np.errstate(invalid="ignore", divide="ignore"):
            return ar.r(np.where(nrm > 0, X / np.where(nrm > 0, nrm, 1), 0))
    raise ValueError(f"unknown normalisation {preset.norm!r}")  # pragma: no cover


def _coupled(ar: Arith, X, sched):
    """SWAN's coupled iteration on A = X X^T (X normalised): Y0 = A, Z0 = I,
    T = 3I - Z Y, Y <- beta Y T, Z <- beta T Z, output Z X; beta = 0.5 (the cubic's a/3)."""
    A = ar.mm(X, _h(X))
    eye = np.eye(A.shape[-1], dtype=ar.dtype)
    Y = A
    Z = np.broadcast_to(eye, A.shape).astype(ar.dtype)
    three = ar.scale(3.0, eye)
    with np.errstate(over="ignore", invalid="ignore"):
        for a, b, c in sched:
            if (a, b, c) != (1.5, -0.5, 0.0):
                raise ValueError("the coupled form implements the cubic (1.5, -0.5) only")
            T = ar.add(three, -ar.mm(Z, Y))
            Y, Z = ar.scale(0.5, ar.mm(Y, T)), ar.scale(0.5, ar.mm(T, Z))
        return ar.mm(Z, X)


def _aol_step(ar: Arith, X, coef, eps):
    """optax's first AOL step: A = X X^H, D = rsqrt(max(rowsum|A|, eps)), X <- D X,
    A <- D A D, then the quintic on (X, A)."""
    a, b, c = coef
    A = ar.mm(X, _h(X))
    rows = np.maximum(np.abs(A).sum(axis=-1), eps)
    s = (1.0 / np.sqrt(rows))[..., :, None].astype(A.real.dtype)
    X = ar.r(X * s)
    A = ar.r(A * s * np.swapaxes(s, -1, -2))
    B = ar.scale(b, A)
    if c != 0.0:
        B = ar.add(B, ar.mm(ar.scale(c, A), A))
    return ar.add(ar.scale(a, X), ar.mm(B, X))


def _gram(ar: Arith, X, sched, resets):
    """Dao-AILab's Gram Newton-Schulz (non-kernel path): R = X X^H, Q accumulates the
    polynomial factors, X <- Q X at each restart and at the end."""
    R = ar.mm(X, _h(X))
    eye = np.broadcast_to(np.eye(R.shape[-1], dtype=ar.dtype), R.shape)
    Q = None
    last = len(sched) - 1
    for i, (a, b, c) in enumerate(sched):
        if i in resets and i != 0:
            X = ar.mm(Q, X)
            R = ar.mm(X, _h(X))
            Q = None
        Z = ar.addmm(R, R, R, beta=b, alpha=c)
        if i != 0 and i not in resets:
            Q = ar.addmm(Q, Q, Z, beta=a, alpha=1.0)
        else:
            Q = ar.add(Z, ar.scale(a, eye))
        if i < last and i + 1 not in resets:
            RZ = ar.addmm(R, R, Z, beta=a, alpha=1.0)
            R = ar.addmm(RZ, Z, RZ, beta=a, alpha=1.0)
    return X if Q is None else ar.mm(Q, X)


def _step(ar: Arith, X, coef, preset: Preset):
    a, b, c = coef
    if preset.form == "horner":  # heavyball: X <- ((c A + b I) A + a I) X
        A = ar.mm(X, _h(X))
        eye = np.eye(A.shape[-1], dtype=ar.dtype)
        Y = ar.add(ar.scale(c, A), ar.scale(b, eye))
        Y = ar.add(ar.mm(Y, A), ar.scale(a, eye))
        return ar.mm(Y, X)
    if preset.form == "right":  # tall orientation, X <- X (a I + b A + c A A)
        A = ar.mm(_h(X), X)
        eye = np.eye(A.shape[-1], dtype=ar.dtype)
        P = ar.add(ar.scale(a, eye), ar.scale(b, A))
        if c != 0.0:
            P = ar.add(P, ar.mm(ar.scale(c, A), A))
        return ar.mm(X, P)
    A = ar.mm(X, _h(X))
    if preset.form in ("addmm", "gram"):  # gram's square-matrix path is the baddbmm form
        B = ar.addmm(A, A, A, beta=b, alpha=c)
        return ar.addmm(X, B, X, beta=a, alpha=1.0)
    B = ar.scale(b, A)
    if c != 0.0:  # skipping 0 * (A @ A) changes nothing: adding an exact zero
        B = ar.add(B, ar.mm(ar.scale(c, A), A))
    return ar.add(ar.scale(a, X), ar.mm(B, X))


@clear_keyword_errors
def whiten_preset(G, name: str, *, steps=None, coefficients=None, emulate=None,
                  check_finite=True) -> np.ndarray:
    """Run preset ``name`` on ``G`` of shape (*batch, m, n), float32 or float64.

    Parameters
    ----------
    G : array_like, float32 or float64 (or complex64/complex128), shape (*batch, m, n); never
        modified.  It takes the input path of :func:`swanref.whiten` (spec 6): byte order,
        subclasses and misaligned buffers normalised, masked arrays, bad dtypes and shapes
        rejected with the same errors.  float16/bfloat16 are a TypeError here (this function
        computes in G's dtype; ``emulate=`` gives the low-precision rounding, and
        ``swanref.whiten`` computes 16-bit input in float32).
    name : a key of :data:`PRESETS` (or :data:`ROUTES`).
    steps : number of polynomial steps (default: the preset's).
    coefficients : replace the preset's table by this list of (a, b, c) triples (the last one
        repeats); required for ``name='custom'``.
    emulate : None (compute in G's dtype), 'bfloat16', 'float16' (PyTorch-eager rounding, see
        swanref.presets.lowprec), or 'source' (the dtype the source computes in).
    check_finite : bool, default True
        Raise ValueError on NaN/Inf (spec 6.2); if False, matrices holding NaN/Inf come back
        as NaN and the others are computed normally.

    Returns an array of G's dtype and shape.  In emulation its values are representable in the
    emulated format.  The zero matrix gives 0, except for presets whose source has no epsilon
    (``jiacheng6``: NaN); see docs/presets.md.
    """
    check_finite = flag(check_finite, "check_finite")
    preset = get_preset(name)
    sched = schedule(name, steps, coefficients)  # every option before the array is looked at
    check_emulate(emulate)
    arr = _host_input(G, "whiten_preset")
    return _finite_policy(arr, check_finite,
                          lambda X: run_preset_unchecked(X, preset, sched, emulate))


@clear_keyword_errors
def run_preset(G, preset: Preset, sched, emulate=None, *, check_finite=True) -> np.ndarray:
    """Run a :class:`Preset` object (possibly a variant) with an explicit schedule.

    ``G`` takes the input path of :func:`whiten_preset`; ``sched`` is a sequence of at most
    ``MAX_ITERATIONS`` (a, b, c) triples (empty: no step).  The order of the normalisation and
    the cast to an emulated format is ``preset.lowprec_order`` (spec 9.7).
    """
    check_finite = flag(check_finite, "check_finite")
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a swanref.presets.Preset (see get_preset), got "
                        f"{type(preset).__name__}")
    sched = _check_schedule(sched)
    check_emulate(emulate)
    arr = _host_input(G, "run_preset")
    return _finite_policy(arr, check_finite,
                          lambda X: run_preset_unchecked(X, preset, sched, emulate))


def check_emulate(emulate):
    """ValueError unless ``emulate`` is one of None, 'bfloat16', 'float16', 'source' (before
    any array is looked at; an array or list gets this message, not NumPy's)."""
    if emulate is not None and not isinstance(emulate, str):
        raise ValueError(f"emulate must be one of {_EMULATE}, got {emulate!r}")
    if emulate not in _EMULATE:
        raise ValueError(f"emulate must be one of {_EMULATE}, got {emulate!r}")


def _check_schedule(sched) -> tuple:
    try:
        n = len(sched)
    except TypeError as exc:
        raise TypeError("sched must be a sequence of (a, b, c) number triples") from exc
    if n > MAX_ITERATIONS:
        raise ValueError(f"sched must have at most {MAX_ITERATIONS} steps (spec 6.5), got {n}")
    return _check_coefficients(sched) if n else ()


def _host_input(G, who: str) -> np.ndarray:
    """The input path of spec 6 (swanref.spec.validate), then this module's dtypes."""
    arr = host_matrix_stack(G, who, allow_complex=True)
    if arr.dtype not in (np.float32, np.float64, np.complex64, np.complex128):
        raise TypeError(f"{who} takes float32, float64, complex64 or complex128 arrays, "
                        f"got {arr.dtype} (swanref.whiten accepts float16/bfloat16 and computes "
                        "in float32; emulate= rounds like a 16-bit source)")
    return arr


def _finite_policy(arr: np.ndarray, check_finite: bool, run) -> np.ndarray:
    """Spec 6.2 around ``run``: NaN/Inf raise, or (check_finite=False) their matrices are
    zeroed for the run and come back as NaN."""
    finite = np.isfinite(arr)
    if finite.all():
        return run(arr)
    if check_finite:
        raise nonfinite_error(int(arr.size - np.count_nonzero(finite)))
    keep = finite.all(axis=(-2, -1), keepdims=True)
    out = run(np.where(keep, arr, 0).astype(arr.dtype))
    return np.where(keep, out, np.nan).astype(out.dtype)


def run_preset_unchecked(G, preset: Preset, sched, emulate=None) -> np.ndarray:
    """:func:`run_preset` without the input path: ``G`` is a finite float32/float64/complex
    ndarray of ndim >= 2 (swanref.ops has normalised it) and ``sched`` a checked schedule."""
    check_emulate(emulate)
    G = np.asarray(G)
    if G.dtype in (np.complex64, np.complex128):
        if emulate not in (None, "source"):
            raise TypeError(f"emulate={emulate!r} rounds real formats only; complex input runs "
                            "without emulation")
        emulate = None  # the sources that take complex input compute in its dtype
    elif G.dtype not in (np.float32, np.float64):
        raise TypeError(f"whiten_preset takes float32, float64, complex64 or complex128 arrays, "
                        f"got {G.dtype} (swanref.whiten accepts float16/bfloat16 and computes "
                        "in float32)")
    if G.ndim < 2:
        raise ValueError(f"G must have shape (*batch, m, n); got {G.shape}")
    if G.size:  # before any cast to the compute format, which could overflow
        G = prescale_huge(G, whole=preset.norm_over == "all",
                          fmt=preset.compute_dtype if emulate == "source" else emulate)
    if emulate == "source":
        emulate = preset.compute_dtype
        if emulate == "float32":
            return run_preset_unchecked(G.astype(np.float32), preset,
                                        sched).astype(G.dtype)
        if emulate == "input":
            emulate = None
    ar = Arith(emulate, G.dtype)
    if G.size == 0:
        return np.zeros(G.shape, G.dtype)
    m, n = G.shape[-2:]
    if preset.route == "svd_square" and m == n:
        # the exact polar factor U V^H of the square matrix, in the input's precision (the
        # source promotes bf16/f16 to float32)
        U, _, Vh = np.linalg.svd(G, full_matrices=False)
        return np.array(U @ Vh, dtype=G.dtype, copy=True)
    flip = {"to_wide": m > n, "to_tall": n > m, "none": False}[preset.transpose]
    if preset.lowprec_order == "normalise_then_cast" and ar.fmt is not None \
            and preset.norm != "aol":
        # normalise the float32 input in float32, then round once to the compute format
        X = np.asarray(G, np.float32)
        if flip:
            X = np.swapaxes(X, -1, -2)
        X = ar.r(_normalise(Arith(None, np.float32), X, preset))
    else:
        X = ar.cast_in(G)
        if flip:
            X = np.swapaxes(X, -1, -2)
        X = _normalise(ar, X, preset)
    if preset.form == "coupled":
        X = _coupled(ar, X, sched)
    elif preset.form == "gram" and m != n:
        X = _gram(ar, X, sched, preset.extra.get("resets", ()))
    else:
        for i, coef in enumerate(sched):
            if preset.norm == "aol" and i == 0:
                X = _aol_step(ar, X, coef, preset.eps)
            else:
                X = _step(ar, X, coef, preset)
    if flip:
        X = np.swapaxes(X, -1, -2)
    return np.array(X, dtype=G.dtype, copy=True)


def with_coefficients(name: str, coefficients) -> Preset:
    """A copy of preset ``name`` with its table replaced (for the checker and the docs)."""
    return replace(get_preset(name), coefficients=_check_coefficients(coefficients))


def describe(name: str) -> str:
    p = get_preset(name)
    return (f"{p.name}: norm={p.norm} scale={p.norm_scale} eps={p.eps:g} "
            f"transpose={p.transpose} form={p.form} steps={p.steps} after={p.after} "
            f"dtype={p.compute_dtype} zero->{p.zero}; {p.source}")


# -- "is this implementation that preset?" (for swanref check --preset; docs/presets.md 7) ----
