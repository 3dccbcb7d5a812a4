"""Claims: one record of what an implementation computes, shared by every check level.

``Claim`` (the record, :mod:`.model`), its knobs with their public sources (:mod:`.knobs`), the
file format (:mod:`.fileformat`), which properties a claim excludes (:mod:`.applicability`), the
tolerance per (claim, level, probe) (:mod:`.tolerance_model`) and the shared command-line parsing
(:mod:`.cli`).  docs/spec.md section 12; docs/verification.md "Writing a claim".

Imports only spec, presets and ``swanref.verify.targets`` (for the usage-error type); every
level (checker, update_properties, optimizer, distributed) builds on it, never the reverse.
"""
from swanref.verify.claims.applicability import not_applicable, register_premise, unsupported_shape
from swanref.verify.claims.cli import (DtypeName, add_claim_arguments, claim_from_args,
                                       parse_assignment, parse_value)
from swanref.verify.claims.fileformat import dumps, load_claim, parse_text, save_claim
from swanref.verify.claims.knobs import DTYPES, KNOBS, LEVELS, ClaimError, Knob
from swanref.verify.claims.model import FORMAT, VERSION, Claim
from swanref.verify.claims.tolerance_model import eps_shift, register_term, tolerance

__all__ = ["Claim", "ClaimError", "Knob", "KNOBS", "DTYPES", "LEVELS", "FORMAT", "VERSION",
           "load_claim", "save_claim", "dumps", "parse_text", "not_applicable",
           "register_premise", "unsupported_shape", "tolerance", "eps_shift", "register_term",
           "add_claim_arguments", "claim_from_args", "parse_value", "parse_assignment",
           "DtypeName"]
