"""Testing helpers: tolerance-aware assertions, generators and (optional) hypothesis strategies.

Every ``assert_*`` has a ``measure_*`` twin of the same name (``assert_whitening_close`` ->
``measure_whitening_close``) that returns the :class:`Measurement` instead of raising.
``swanref.testing.strategies`` needs hypothesis and is imported on demand; everything exported
here works without it.
"""
from swanref.spec.tolerance import (condition_number, exact_whitening_tolerance, grad_norm_tolerance,
                         newton_schulz_tolerance, unit_roundoff)
from swanref.verify.measure import (Measurement, SwanrefAssertionError, NoClaimError, assert_close,
                         assert_grad_norm_close, assert_newton_schulz_close,
                         assert_orthonormal_rows, assert_partial_isometry, assert_sinkgd_close,
                         assert_swan_update_close, assert_symmetric_psd, assert_whitening_close,
                         extended_absolute_error, extended_relative_error, fro_error,
                         measure_close, measure_grad_norm_close, measure_newton_schulz_close,
                         measure_orthonormal_rows, measure_partial_isometry,
                         measure_sinkgd_close, measure_swan_update_close, measure_symmetric_psd,
                         measure_whitening_close, mixed_error)

__all__ = ["condition_number", "exact_whitening_tolerance", "grad_norm_tolerance",
           "newton_schulz_tolerance", "unit_roundoff", "Measurement", "SwanrefAssertionError", "NoClaimError",
           "assert_close", "assert_grad_norm_close", "assert_newton_schulz_close",
           "assert_orthonormal_rows", "assert_partial_isometry", "assert_sinkgd_close",
           "assert_swan_update_close", "assert_symmetric_psd", "assert_whitening_close",
           "measure_close", "measure_grad_norm_close", "measure_newton_schulz_close",
           "measure_orthonormal_rows", "measure_partial_isometry", "measure_sinkgd_close",
           "measure_swan_update_close", "measure_symmetric_psd", "measure_whitening_close",
           "extended_absolute_error", "extended_relative_error", "fro_error", "mixed_error"]
