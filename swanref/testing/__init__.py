"""Testing helpers: tolerance-aware assertions, generators and (optional) hypothesis strategies.

``swanref.testing.strategies`` needs hypothesis and is imported on demand; everything exported
here works without it.
"""
from swanref.spec.tolerance import (condition_number, exact_whitening_tolerance, grad_norm_tolerance,
                         newton_schulz_tolerance, unit_roundoff)
from swanref.verify.measure import (Measurement, SwanrefAssertionError, assert_close,
                         assert_grad_norm_close, assert_newton_schulz_close,
                         assert_orthonormal_rows, assert_partial_isometry, assert_sinkgd_close,
                         assert_swan_update_close, assert_symmetric_psd, assert_whitening_close,
                         extended_absolute_error, extended_relative_error, fro_error,
                         mixed_error)

__all__ = ["condition_number", "exact_whitening_tolerance", "grad_norm_tolerance",
           "newton_schulz_tolerance", "unit_roundoff", "Measurement", "SwanrefAssertionError",
           "assert_close", "assert_grad_norm_close", "assert_newton_schulz_close",
           "assert_orthonormal_rows", "assert_partial_isometry", "assert_sinkgd_close",
           "assert_swan_update_close", "assert_symmetric_psd", "assert_whitening_close",
           "extended_absolute_error", "extended_relative_error", "fro_error", "mixed_error"]
