"""Each backend's error on the shipped golden vectors against its recorded error
(swanref/data/vectors/observed-*.json): a 10x regression fails, although the model tolerance
(the contract for third-party code) would still pass it."""
import numpy as np
import pytest

from swanref.backends import registry
from swanref.verify import ratchet


@pytest.fixture(scope="module")
def recorded():
    return ratchet.load()["backends"]


@pytest.mark.parametrize("backend", registry.names())
def test_backend_holds_its_recorded_accuracy(backend, recorded):
    if not registry.is_available(backend):
        pytest.skip(f"backend {backend!r} not available here")
    if backend not in recorded:
        pytest.skip(f"no recorded errors for {backend!r} (recorded on CPU backends only)")
    bad = ratchet.regressions(recorded[backend], ratchet.observe(backend), ratchet.case_dtypes())
    assert not bad, "\n".join(bad)


def test_ratchet_is_tighter_than_the_model(recorded):
    """The point of the ratchet: somewhere the recorded error x 10 is far below the model
    tolerance, so a 10x regression would pass the model and fail here."""
    from swanref.verify import vectors as V
    tol = {t["name"]: t["tolerance"] for _, t in V.iter_tests(V.load_manifest(V.SHIPPED))}
    ref = recorded["reference"]
    assert sum(ratchet.FACTOR * ref[k] < tol[k] / 10 for k in ref) >= len(ref) // 2


def test_ten_fold_regression_fails(recorded):
    dtypes = ratchet.case_dtypes()
    name = "grad_norm_basic"
    worse = {name: 11 * max(recorded["reference"][name], np.finfo(np.float64).eps / 2)}
    assert ratchet.regressions(recorded["reference"], worse, dtypes)
    same = {name: recorded["reference"][name]}
    assert not ratchet.regressions(recorded["reference"], same, dtypes)
