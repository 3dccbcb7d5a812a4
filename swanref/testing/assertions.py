"""Tolerance-aware assertions (public path; the machinery lives in ``swanref.verify.measure``).

``measure_grad_norm`` and friends are the older names of the ``measure_*_close`` twins.
"""
from swanref.verify.measure import (Measurement, SwanrefAssertionError, NoClaimError, assert_close,  # noqa: F401
                                    assert_grad_norm_close, assert_newton_schulz_close,
                                    assert_orthonormal_rows, assert_partial_isometry,
                                    assert_sinkgd_close, assert_swan_update_close,
                                    assert_symmetric_psd, assert_whitening_close, describe_input,
                                    extended_absolute_error, extended_relative_error, fro_error,
                                    measure_close, measure_grad_norm, measure_grad_norm_close,
                                    measure_newton_schulz, measure_newton_schulz_close,
                                    measure_orthonormal_rows, measure_partial_isometry,
                                    measure_singular_values, measure_sinkgd,
                                    measure_sinkgd_close, measure_swan_update,
                                    measure_swan_update_close, measure_symmetric_psd,
                                    measure_whitening, measure_whitening_close, mixed_error,
                                    sinkgd_tolerance, swan_update_tolerance)
