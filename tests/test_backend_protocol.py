"""The backend protocol (swanref.backends.protocol) holds for every backend module, and a
fallback from the compiled core to the reference is never silent."""
from __future__ import annotations

import importlib
import types
import warnings

import pytest

from swanref.backends import protocol, registry

MODULES = dict(registry._MODULES) if hasattr(registry, "_MODULES") else {}


def _module(name):
    try:
        return importlib.import_module(MODULES[name])
    except ImportError as exc:  # a backend module must import even without its library
        pytest.fail(f"backend module {MODULES[name]} does not import: {exc}")


@pytest.mark.parametrize("name", registry.names())
def test_backend_module_conforms(name):
    module = _module(name)
    assert module.name == name
    assert protocol.missing(module) == []
    assert isinstance(module, protocol.Backend)


@pytest.mark.parametrize("name", registry.names())
def test_capability_table(name):
    caps = protocol.capabilities(_module(name))
    assert set(caps) == set(protocol.REQUIRED) | set(protocol.OPTIONAL)
    assert all(caps[k] for k in protocol.REQUIRED)


def test_reference_lacks_the_polynomial_kernel_and_cpp_has_it():
    assert not protocol.has(_module("reference"), "whiten_polynomial")
    assert protocol.has(_module("cpp"), "whiten_polynomial")
    with pytest.raises(ValueError, match="unknown optional kernel"):
        protocol.has(_module("cpp"), "whiten_magic")


def test_missing_names_what_is_wrong():
    fake = types.SimpleNamespace(name="fake", available=lambda: True,
                                 grad_norm=lambda G: G,           # eps missing
                                 whiten_svd=lambda G, sigma_rtol: G)
    problems = protocol.missing(fake)
    assert any(p.startswith("grad_norm(") for p in problems)
    assert "sinkgd: missing" in problems and "whiten_eigh: missing" in problems
    assert not isinstance(types.SimpleNamespace(name="x"), protocol.Backend)


def test_broken_core_fallback_warns(monkeypatch):
    from swanref.backends import cpp
    monkeypatch.setattr(cpp, "_core", None)
    monkeypatch.setattr(cpp, "import_error", ImportError("undefined symbol: dgemm_"))
    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.setattr(registry, "_warned", False)
    with pytest.warns(RuntimeWarning, match="undefined symbol: dgemm_"):
        assert registry.default_cpu() == "reference"


def test_pure_python_install_falls_back_quietly(monkeypatch):
    from swanref.backends import cpp
    err = ModuleNotFoundError("No module named 'swanref._core'", name="swanref._core")
    monkeypatch.setattr(cpp, "_core", None)
    monkeypatch.setattr(cpp, "import_error", err)
    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.setattr(registry, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.default_cpu() == "reference"
