"""Named readings of the points the SWAN paper leaves open (docs/spec.md, section 7).

Each entry states the default and where it comes from, so a golden value can always be
reproduced by naming its reading explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SPEC_VERSION = "0.3"

#: spec version of the shipped golden vectors (swanref/data/vectors/v<VECTORS_VERSION>): 0.2
#: changed tolerances of the checker, not one operator's value, so the 0.1 set still holds
VECTORS_VERSION = "0.1"

SCALINGS = ("gram_fro", "grad_fro", "none")
ON_DIVERGENCE = ("raise", "warn", "fallback", "ignore")
GRAD_NORM_AXES = (-1, -2, "long")


@dataclass(frozen=True)
class WhitenMethod:
    name: str
    kind: str                      # "exact" or "iterative"
    defaults: dict = field(default_factory=dict)
    source: str = ""


WHITEN_METHODS = {
    "svd": WhitenMethod(
        "svd", "exact", {"rank_rtol": None},
        "polar factor via thin SVD (LAPACK gesdd); error ~ kappa * eps; the reference"),
    "eigh": WhitenMethod(
        "eigh", "exact", {"rank_rtol": None},
        "(G G^T)^(-1/2) G via eigh of the Gram matrix (syevd); error ~ kappa^2 * eps"),
    "newton_schulz": WhitenMethod(
        "newton_schulz", "iterative", {"steps": 10, "beta": 0.5, "scaling": "gram_fro"},
        "coupled Newton-Schulz on G G^T: SWAN Algorithm 2 as transcribed (ethansmith2000), "
        "Y0 = A/||A||_F per Gong et al. 2025 App. B.8, beta = 1/2 classical (Higham 2008)"),
    "nsds": WhitenMethod(
        "nsds", "iterative", {"steps": 2, "beta": 0.4, "scaling": "gram_fro"},
        "Newton-Schulz with diagonal substitution, RECONSTRUCTED from third-party code for "
        "the ICML version's NSDS variant (beta 0.4, 2 steps as reported there)"),
}

#: default rank tolerance factor: s_i > max(m, n) * eps(dtype) * s_1 (as numpy.linalg.matrix_rank)
def default_rank_rtol(m: int, n: int, eps: float) -> float:
    return max(m, n) * eps


#: production Muon-style orthogonalizer presets, usable as ``whiten(G, method=NAME)``; their
#: normalisation, epsilon, schedule and source are in swanref.presets.PRESETS and docs/presets.md
WHITEN_PRESETS = ("muon_ns5", "torch_muon", "polar_express", "polar_express_nanogpt", "you_ns5",
                  "jiacheng6", "deepseek_v4", "optax_muon", "nemo_polar_express", "cubic",
                  "swan_coupled", "ptopt_polar_express", "emerging_polar_express",
                  "heavyball_msign", "custom")
