"""The embedded default gradients used by ``swanref report`` (and the studies).

Deterministic (fixed seeds), small enough that the whole report runs in seconds, and chosen
to hit every regime of the spec: well- and ill-conditioned, rank-deficient, tall, batched,
rows with offsets (GradNorm's domain), constant rows and the zero matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swanref.verify import matrices


@dataclass(frozen=True)
class Case:
    name: str
    G: np.ndarray
    note: str


def default_cases() -> list[Case]:
    rng = np.random.default_rng(20241217)  # SWAN v1's release date
    cases = [
        Case("well_conditioned", matrices.conditioned(rng, 32, 96, 10.0), "kappa 1e1"),
        Case("ill_conditioned", matrices.conditioned(rng, 32, 96, 1e6), "kappa 1e6"),
        Case("rank_deficient", matrices.conditioned(rng, 32, 96, 10.0, rank=12),
             "rank 12 of 32"),
        Case("tall", matrices.conditioned(rng, 96, 24, 100.0), "96 x 24, kappa 1e2"),
        Case("batched", np.stack([matrices.conditioned(rng, 16, 40, k)
                                  for k in (1.0, 1e2, 1e4)]), "3 slices, kappa 1 / 1e2 / 1e4"),
        Case("gaussian_square", rng.standard_normal((48, 48)), "random square"),
    ]
    offsets = rng.standard_normal((24, 1)) * 10 + 3 * rng.standard_normal((24, 64))
    offsets[5] = 2.5  # a constant row
    cases.append(Case("row_offsets", offsets, "rows with offsets, one constant row"))
    cases.append(Case("zero", np.zeros((8, 16)), "zero matrix"))
    return cases
