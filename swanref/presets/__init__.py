"""Production orthogonalisation presets (docs/presets.md): the catalogue and its transcriptions
(``catalogue``), low-precision emulation (``lowprec``), coefficient schedules and their verifier
(``schedules``), and the preset diagnosis (``diagnose``).

Imports only ``swanref.spec`` and ``swanref.presets`` itself.
"""
from swanref.presets.catalogue import *  # noqa: F403 - the public catalogue API
from swanref.presets.catalogue import __all__ as _catalogue_all
from swanref.presets.catalogue import describe, run_preset, with_coefficients
from swanref.presets.diagnose import MATCH_TOLERANCE, Diagnosis, diagnose

__all__ = [*_catalogue_all, "describe", "run_preset", "with_coefficients", "MATCH_TOLERANCE",
           "Diagnosis", "diagnose"]
