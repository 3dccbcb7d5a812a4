"""pytest plugin: run swanref's conformance checks from a test suite.

Installed swanref registers the ``pytest11`` entry point ``swanref`` (a shim,
``swanref._pytest_entry``, that loads this module), so plain ``pytest`` loads it; from a source
tree that is not installed, add ``-p swanref.pytest_plugin`` (on an installed swanref that option
is a harmless no-op).  ``-p no:swanref`` (or ``-p no:swanref.pytest_plugin``) disables it.  Two
ways to use it:

* the ``swanref_check`` fixture, inside your own tests::

      def test_my_polar(swanref_check):
          swanref_check(my_polar, "whiten")                       # exact claim
          swanref_check(my_ns, "whiten", method="newton_schulz", steps=5)

  It fails the test with the checker's table when the implementation does not conform, and
  returns the CheckReport otherwise.

* command-line targets, one test item per property::

      pytest --swanref-target whiten=mypkg.ops:polar \\
             --swanref-claim whiten:method=svd --swanref-examples 50

  Items are named ``swanref[OP:property]``; unsupported input classes and properties that do
  not apply are reported as skipped.

* a claim (docs/spec.md 11): ``--swanref-claim-file FILE``, ``--swanref-preset NAME`` and
  ``--swanref-set KNOB=VALUE`` (as ``swanref check``'s ``--claim``, ``--preset``, ``--set``)
  make one claim; each ``--swanref-target`` (OP may be ``update``) is then one item
  ``swanref[OP:claim]`` running the whole check under it, and the fixture uses it when a call
  names no claim.  In a test: ``swanref_check(fn, "update", claim=Claim.from_preset(...),
  eps=1e-8)`` (claim knobs as keywords replace the claim's).

Options: ``--swanref-examples N`` (default 30), ``--swanref-seed S`` (default 0),
``--swanref-dtype DT`` (default float64), ``--swanref-strict``, ``--swanref-timeout S``
(seconds one call of the target may take).  The verdict rule is the CLI's: the fixture passes
only a CONFORMING report (exit 0); an item passes only when its property ran on an input with
a claim and passed, fails on FAIL, a timeout or an exit of the target, and is skipped when
the property could not judge (n/a, unsupported, no claim: the skip says why).  The plugin imports nothing
heavy until it is used.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest


def pytest_addoption(parser):
    group = parser.getgroup("swanref", "swanref conformance checks")
    group.addoption("--swanref-target", action="append", default=[], metavar="OP=TARGET",
                    help="check TARGET (module:function or file.py:function) as OP; "
                         "repeatable")
    group.addoption("--swanref-claim", action="append", default=[], metavar="[OP:]KEY=VALUE",
                    help="claimed reading, e.g. whiten:method=newton_schulz, steps=5, "
                         "axis=-2, rescale=false, full_rank_only=true; repeatable")
    group.addoption("--swanref-examples", type=int, default=30,
                    help="hypothesis examples per property (default 30)")
    group.addoption("--swanref-seed", type=int, default=0, help="seed (default 0)")
    group.addoption("--swanref-dtype", default="float64", help="input dtype (default float64)")
    group.addoption("--swanref-strict", action="store_true",
                    help="advisory failures and unsupported input classes fail")
    group.addoption("--swanref-timeout", type=float, default=None,
                    help="seconds one call of the target may take (default: swanref "
                         "check's, 60; 0: no deadline)")
    group.addoption("--swanref-claim-file", default=None, metavar="FILE",
                    help="a claim file (.toml or .json, docs/spec.md 11.2)")
    group.addoption("--swanref-preset", default=None, metavar="NAME",
                    help="claim: start from a catalogue preset as its source runs it")
    group.addoption("--swanref-set", action="append", default=[], metavar="KNOB=VALUE",
                    help="claim: override one knob (repeatable), e.g. eps=1e-12")


def _config_claim(config):
    """The claim of --swanref-claim-file/--swanref-preset/--swanref-set, or None."""
    path = config.getoption("swanref_claim_file")
    name = config.getoption("swanref_preset")
    sets = config.getoption("swanref_set")
    if path is None and name is None and not sets:
        return None
    import argparse

    from swanref.verify.claims import ClaimError, claim_from_args
    ns = argparse.Namespace(claim=path, preset=name, set_knobs=list(sets))
    try:
        return claim_from_args(ns)
    except (ClaimError, OSError) as exc:
        raise pytest.UsageError(f"swanref claim: {exc}") from None


_INT = {"steps", "iters", "max_side"}
_FLOAT = {"beta", "eps", "max_kappa"}
_BOOL = {"rescale", "full_rank_only"}
_STR = {"method", "scaling", "dtype"}


def _parse_claims(values, op):
    claim = {}
    for item in values:
        scope, _, kv = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("", "", item)
        if scope and scope != op:
            continue
        key, sep, value = kv.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise pytest.UsageError(f"--swanref-claim expects KEY=VALUE, got {item!r}")
        if key in _INT:
            claim[key] = int(value)
        elif key in _FLOAT:
            claim[key] = float(value)
        elif key in _BOOL:
            claim[key] = value.strip().lower() in ("1", "true", "yes", "on")
        elif key == "axis":
            claim[key] = value if value == "long" else int(value)
        elif key in _STR:
            claim[key] = value
        else:
            raise pytest.UsageError(f"--swanref-claim: unknown key {key!r}")
    return claim


def _defaults(config):
    from swanref.verify import checker
    timeout = config.getoption("swanref_timeout")
    return {"examples": config.getoption("swanref_examples"),
            "seed": config.getoption("swanref_seed"),
            "dtype": config.getoption("swanref_dtype"),
            "strict": config.getoption("swanref_strict"),
            "timeout": checker.DEFAULT_TIMEOUT_S if timeout is None else (timeout or None)}


@pytest.fixture
def swanref_check(request):
    """``swanref_check(fn, op, **claim) -> CheckReport``; fails the test if not conforming."""
    defaults = _defaults(request.config)

    def run(fn, op, claim=None, **reading):
        # the checker (and hypothesis) load only when used: the plugin loads in every pytest run
        import inspect

        from swanref.verify import checker
        from swanref.verify.claims import KNOBS, ClaimError
        kw = dict(defaults)
        if op == "update":      # fixed probes: no examples, no seed
            kw.pop("examples"), kw.pop("seed")
        params = inspect.signature(checker.check).parameters
        # with a claim (or at the update level) a knob name is a knob (eps=...), else a
        # keyword of the operator check when it has one
        knobs = {k: v for k, v in reading.items() if k in KNOBS and (
            claim is not None or op == "update" or k not in params)}
        kw.update((k, v) for k, v in reading.items() if k not in knobs)
        try:
            if claim is None and (knobs or not reading):
                claim = _config_claim(request.config)
            if knobs:
                from swanref.verify.claims import Claim
                claim = (claim or Claim()).replace(**knobs)
            if claim is not None:
                kw["claim"] = claim
                kw.pop("dtype", None)  # the claim's compute_dtype
            report = checker.check(fn, op, **kw)
        except ClaimError as exc:
            pytest.fail(f"swanref_check: {exc}", pytrace=False)
        except checker.UsageError as exc:
            pytest.fail(f"swanref_check: {exc}", pytrace=False)
        if not report.conforming:   # the CLI's rule: exit 0 <=> a green test
            pytest.fail(report.table(), pytrace=False)
        return report
    return run


class SwanrefItem(pytest.Item):
    def __init__(self, *, op, target, prop, claim, **kw):
        super().__init__(**kw)
        self.op, self.target, self.prop, self.claim = op, target, prop, claim

    def runtest(self):
        from swanref.verify import checker
        from swanref.verify.properties import Claim
        opts = _defaults(self.config)
        runner = checker.TargetRunner(opts["timeout"])
        try:
            fn = checker.load_target(self.target, runner)
        except checker.UsageError as exc:
            raise pytest.UsageError(f"--swanref-target {self.op}={self.target}: {exc}") \
                from None
        except (checker.TargetAborted, checker.TargetTimeout) as exc:
            pytest.fail(f"--swanref-target {self.op}={self.target}: {exc}", pytrace=False)
        claim_kw = dict(self.claim)
        dtype = checker._parse_dtype(claim_kw.pop("dtype", opts["dtype"]))
        checker._validate_reading(self.op, claim_kw.get("method", "svd"),
                                  claim_kw.get("steps"), claim_kw.get("beta"),
                                  claim_kw.get("scaling"))
        claim = Claim(self.op, dtype, **claim_kw)
        call = checker.make_call(fn, runner=runner)
        with np.errstate(all="ignore"):
            res = checker.run_property(self.prop, claim, call, opts["examples"], opts["seed"])
        self.user_properties.append(("swanref", res.to_dict()))
        if res.status in ("FAIL", "timeout", "aborted") or (
                opts["strict"] and res.status in ("warn", "unsupported")):
            raise SwanrefFailure(res)
        if res.status in ("n/a", "unsupported", "no-claim"):
            pytest.skip(f"{res.status}: {res.message}")
        if res.status == "warn":
            warnings.warn(f"swanref advisory property {res.name} failed: {res.message}",
                          stacklevel=1)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SwanrefFailure):
            r = excinfo.value.result
            lines = [f"{self.op} {self.target}: [{r.status}] {r.name}: {r.doc}", r.message]
            if r.array is not None:
                lines.append(f"shrunk input: {r.array}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"swanref[{self.op}:{self.prop.name}]"


class SwanrefClaimItem(pytest.Item):
    """One target checked as a whole under the command line's claim."""

    def __init__(self, *, op, target, claim, **kw):
        super().__init__(**kw)
        self.op, self.target, self.claim = op, target, claim

    def runtest(self):
        from swanref.verify import checker
        opts = _defaults(self.config)
        try:
            fn = checker.load_target(self.target)
            report = checker.check(fn, self.op, claim=self.claim, examples=opts["examples"],
                                   seed=opts["seed"], strict=opts["strict"])
        except checker.UsageError as exc:
            raise pytest.UsageError(f"--swanref-target {self.op}={self.target}: {exc}") \
                from None
        self.user_properties.append(("swanref", report.to_dict()))
        if not report.conforming:
            raise SwanrefReportFailure(report)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SwanrefReportFailure):
            return excinfo.value.report.table()
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"swanref[{self.op}:claim]"


class SwanrefReportFailure(Exception):
    def __init__(self, report):
        super().__init__("not conforming")
        self.report = report


class SwanrefFailure(Exception):
    def __init__(self, result):
        super().__init__(result.message)
        self.result = result


def pytest_collection_modifyitems(session, config, items):
    targets = config.getoption("swanref_target")
    if not targets:
        return
    from swanref.verify.properties import OPS, Claim, properties_for
    claimed = _config_claim(config)
    for spec in targets:
        op, sep, target = spec.partition("=")
        if claimed is not None and sep and op in OPS + ("update",):
            items.append(SwanrefClaimItem.from_parent(session, name=f"swanref[{op}:claim]",
                                                      op=op, target=target, claim=claimed))
            continue
        if not sep or op not in OPS:
            raise pytest.UsageError(f"--swanref-target expects OP=TARGET with OP in {OPS}, "
                                    f"got {spec!r}")
        claim = _parse_claims(config.getoption("swanref_claim"), op)
        for prop in properties_for(Claim(op)):
            items.append(SwanrefItem.from_parent(session, name=f"swanref[{op}:{prop.name}]",
                                                 op=op, target=target, prop=prop,
                                                 claim=claim))
