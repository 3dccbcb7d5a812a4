"""Shared fixtures: every spec test runs against every backend available here."""
from __future__ import annotations

import os
import zlib

# Two OpenBLAS pools on two cores oversubscribe badly: one BLAS thread for the suite.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from swanref.backends import registry as _backends  # noqa: E402

settings.register_profile(
    "swanref", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("SWANREF_HYPOTHESIS_PROFILE", "swanref"))


class Backend:
    """A backend under test plus the conversions between NumPy and its array kind."""

    def __init__(self, name: str):
        self.name = name
        if name == "cupy":
            import cupy
            self.asarray = cupy.asarray
            self.tonumpy = cupy.asnumpy
        else:
            self.asarray = self.tonumpy = np.asarray

    def __call__(self, fn, G, *args, **kwargs):
        """Call public operator ``fn`` on NumPy ``G`` with this backend; NumPy result."""
        return self.tonumpy(fn(self.asarray(G), *args, backend=self.name, **kwargs))

    def __repr__(self):
        return self.name


def _why_unavailable(name):
    try:
        _backends.get(name)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.fixture(params=_backends.names(), scope="session")
def backend(request):
    reason = _why_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return Backend(request.param)


@pytest.fixture
def rng(request):
    # One deterministic stream per test (crc32, not hash(): that is salted per process).
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


#: The slowest tests (each 20 s or more on the 2-core development machine: CMake builds,
#: subprocess runs of third-party frameworks, the full study): marked ``slow`` here so that
#: ``pytest -m "not slow"`` is the quick subset the README offers. Node-id prefixes.
SLOW_TESTS = (
    "tests/test_cpp_embedding.py::",
    "tests/test_cpp_robustness.py::test_sanitizer_build_passes_ctest_and_the_c_api_fuzz",
    "tests/test_cpp_headers.py::test_every_public_header_compiles_on_its_own",
    "tests/test_verification_docs.py::test_doc_example",
    "tests/test_corpus.py::test_correct_implementation_is_accepted[polar_jax",
    "tests/test_corpus.py::test_correct_implementation_is_accepted[gn_jax",
    "tests/test_checker.py::test_pytest_plugin_target_items",
    "tests/test_checker.py::test_pytest_plugin_fixture",
    "tests/test_study.py::test_every_study_writes_png_svg_csv_json",
    "tests/test_optimizer_check.py::test_real_optimizer_conforms[optax.contrib.muon]",
    "tests/test_optimizer_check.py::test_docs_table_row_is_what_the_command_prints",
    "tests/test_report_cli.py::test_closed_pipe_is_not_a_traceback",
    "tests/test_docs_numbers.py::test_condition_numbers_recomputed",
    "tests/test_docs_numbers.py::test_nullspace_and_divergence_numbers_recomputed",
    "tests/test_distributed.py::test_dion_distributed_muon_conforms",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid if item.nodeid.startswith("tests/") else "tests/" + item.nodeid
        if nodeid.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
