"""``swanref study``: numerical accuracy studies with plots.

Each study sweeps one quantity (condition number, steps, beta, dtype, size), measures the
public operators (``swanref.whiten`` and friends) against the exact reference of spec 3.1 or
the spectral prediction of spec 3.6, draws the spec tolerance (section 8) where it applies,
and writes ``NAME.png``, ``NAME.svg``, ``NAME.csv`` and ``NAME.json`` to the output folder,
plus ``numbers.json`` (the headline numbers docs/guide.md quotes) and ``index.md`` /
``index.html`` that show every figure with the command and parameters that made it.

    swanref study OUTDIR [--quick] [--timing] [--backend NAME ...] [--only NAME ...] [--seed N]

Accuracy studies (default): condition, steps, band, nullspace, divergence (one module each).
The timing study is opt-in (``--timing`` or ``--only timing``).  BLAS is pinned to one thread
(threadpoolctl) unless ``--threads`` says otherwise.
"""
from swanref.tools.study.band import study_band
from swanref.tools.study.common import Context, Result
from swanref.tools.study.condition import study_condition
from swanref.tools.study.divergence import study_divergence
from swanref.tools.study.driver import ACCURACY_STUDIES, STUDIES, STUDY_NAMES, main, run
from swanref.tools.study.nullspace import study_nullspace
from swanref.tools.study.steps import study_steps
from swanref.tools.study.timing import study_timing

__all__ = ["ACCURACY_STUDIES", "STUDIES", "STUDY_NAMES", "Context", "Result", "main", "run",
           "study_band", "study_condition", "study_divergence", "study_nullspace",
           "study_steps", "study_timing"]
