"""Conformance rows of the sharded check (docs/conformance.md, sharded section): real sharded
code checked with the claim its user would write, at several world sizes, in its compute dtype,
and each planted real-world bug with the mistake it must be named as.

The faithful rows are torch.optim.Muon on DTensor parameters (installed torch) and the copies
vendored in a source checkout's ``tests/sharded_impls`` (NVIDIA-NeMo Emerging-Optimizers'
``newton_schulz_tp``, KellerJordan/Muon's DistributedMuon and Newton-Schulz function, with their
licences and source links); a row whose code is absent says so instead of running.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import pathlib
import time
from dataclasses import dataclass, field

from swanref.verify.distributed import RankPool, check_sharded
from swanref.verify.targets import UsageError

__all__ = ["ShardedEntry", "SHARDED_ENTRIES", "sharded_conformance_rows", "impls_dir"]


def impls_dir() -> pathlib.Path:
    """``tests/sharded_impls`` of the source checkout swanref runs from (absent when installed
    from a wheel)."""
    return pathlib.Path(__file__).resolve().parents[3] / "tests" / "sharded_impls"


@dataclass(frozen=True)
class ShardedEntry:
    """One row: ``target`` is ``module:attr`` or ``FILE:attr`` with FILE relative to
    :func:`impls_dir`; ``check`` the keyword arguments of ``check_sharded`` (the claim, the
    layout and the calling convention); ``named``: None for faithful code (expected
    CONFORMING), else the property that must name the planted bug ('' = rejected, no name)."""
    implementation: str
    source: str
    target: str
    check: dict = field(default_factory=dict)
    named: str | None = None
    vendored: bool = True
    #: world sizes at which the planted bug does not exist (the expected verdict there is
    #: CONFORMING): one rank has no shards; 10 rows on 2 ranks cut alike by chunk and
    #: tensor_split
    hidden_at: tuple = (1,)

    @property
    def dtype(self) -> str:
        return self.check.get("dtype", "float64")


def _nemo(partition_dim, mode="distributed"):
    return dict(preset="emerging_polar_express", dtype="float32",
                layout="cols" if partition_dim == 1 else "rows",
                kwargs=dict(steps=5, coefficient_type="polar_express", tp_group="@group",
                            partition_dim=partition_dim, tp_mode=mode))


_KELLER_OPT = dict(layout="stack", preset="muon_ns5", dtype="bfloat16", input_dtype="float32",
                   convention="replicated")
_KELLER_DT = dict(layout="rows", preset="muon_ns5", dtype="bfloat16", convention="dtensor",
                  shape=(10, 12), kwargs=dict(steps=5))
_NEMO_SRC = "NVIDIA-NeMo/Emerging-Optimizers@fd772926 muon_utils.newton_schulz_tp"
_KELLER_SRC = "KellerJordan/Muon@857d1adc muon.py"
_BUG = "planted in "

SHARDED_ENTRIES = (
    ShardedEntry("torch.optim.Muon (DTensor parameter)", "torch",
                 "torch.optim:Muon",
                 dict(layout="rows", preset="muon_ns5", dtype="bfloat16",
                      input_dtype="float32", convention="optimizer", shape=(10, 12)),
                 vendored=False),
    ShardedEntry("newton_schulz_tp, tp_mode=distributed", _NEMO_SRC,
                 "nemo_muon_utils.py:newton_schulz_tp", _nemo(1)),
    ShardedEntry("newton_schulz_tp, tp_mode=duplicated", _NEMO_SRC,
                 "nemo_muon_utils.py:newton_schulz_tp", _nemo(0, "duplicated")),
    ShardedEntry("DistributedMuon (replicated parameters)", _KELLER_SRC, "keller_muon.py:Muon",
                 _KELLER_OPT),
    ShardedEntry("zeropower_via_newtonschulz5 on a DTensor", _KELLER_SRC,
                 "keller_muon.py:zeropower_via_newtonschulz5", _KELLER_DT),
    ShardedEntry("newton_schulz_tp, norm of the local shard", _BUG + _NEMO_SRC,
                 "real_bugs.py:nemo_tp_local_norm", _nemo(1), "global_norm"),
    ShardedEntry("newton_schulz_tp, sum of squares averaged", _BUG + _NEMO_SRC,
                 "real_bugs.py:nemo_tp_norm_averaged", _nemo(0), "norm_scale"),
    ShardedEntry("newton_schulz_tp, norm off by 1 + 2^-13", _BUG + _NEMO_SRC,
                 "real_bugs.py:nemo_tp_norm_off", _nemo(1), "", hidden_at=()),
    ShardedEntry("newton_schulz_tp, Gram all-reduced in bfloat16", _BUG + _NEMO_SRC,
                 "real_bugs.py:nemo_tp_bf16_gram", _nemo(1), "", hidden_at=()),
    ShardedEntry("newton_schulz_tp, gathered along the wrong axis", _BUG + _NEMO_SRC,
                 "real_bugs.py:nemo_tp_gather_wrong_axis", _nemo(0, "duplicated"),
                 "gather_axis"),
    ShardedEntry("DistributedMuon, update averaged over ranks", _BUG + _KELLER_SRC,
                 "real_bugs.py:KellerMuonAveraged", _KELLER_OPT, "world_scaled"),
    ShardedEntry("DistributedMuon, no all_gather", _BUG + _KELLER_SRC,
                 "real_bugs.py:KellerMuonNoGather", _KELLER_OPT, ""),
    ShardedEntry("DTensor gathered, cut by tensor_split", _BUG + _KELLER_SRC,
                 "real_bugs.py:keller_full_then_tensor_split", _KELLER_DT, "shard_shapes",
                 hidden_at=(1, 2)),
)

_NAMED = ("whole_matrix", "global_norm", "global_gram", "gather_axis", "norm_scale",
          "world_scaled", "shard_order", "stack_independent", "shard_shapes")


def _claim_text(check: dict) -> str:
    parts = []
    for k, v in check.items():
        if k == "kwargs":
            parts += [f"--kwarg {n}={x}" for n, x in v.items()]
        elif k == "shape":
            parts.append(f"--shape {v[0]}x{v[1]}")
        else:
            parts.append(f"--{'shard' if k == 'layout' else k.replace('_', '-')} {v}")
    return " ".join(parts)


def _expected(entry: ShardedEntry, world: int) -> str:
    if entry.named is None or world in entry.hidden_at:
        return "CONFORMING"
    return "NOT CONFORMING"


def sharded_conformance_rows(world_sizes=(1, 2, 4), entries=None, backend="gloo",
                             timeout=60.0, log=None, pools=None) -> list:
    """Run every entry at every world size and return one dict per (entry, world size).

    Keys: ``implementation``, ``source``, ``target``, ``claim`` (the ``check-sharded`` options
    that state it), ``world_size``, ``dtype`` (the claimed compute dtype), ``verdict``
    (CONFORMING, NOT CONFORMING, TIMEOUT, ..., or ``absent`` with the reason in ``note``),
    ``expected`` (the verdict the row must have), ``as_expected`` (bool: the verdict and, for
    a planted bug, the named mistake are the expected ones), ``named`` (the named mistakes that
    failed, sorted, or ''), ``expected_named``, ``error`` and ``tolerance`` (of
    ``agrees_with_unsharded``: the worst failing, else the worst passing input; None when not
    judged), ``seconds``, ``note``.

    ``world_sizes``: the world sizes (one pool of gloo ranks each, ``backend`` 'gloo' on CPUs;
    4 ranks start in a few seconds); ``entries``: default :data:`SHARDED_ENTRIES`;
    ``timeout``: the per-call deadline (``check_sharded(timeout=)``); ``log``: a stream for
    one progress line per row; ``pools``: ``{world size: RankPool}`` to reuse (left open).
    Needs torch (ImportError otherwise).

    ``python -c "from swanref.verify.sharded.table import sharded_conformance_rows as f;
    print(f())"`` from a source checkout prints the rows.
    """
    import torch  # noqa: F401 - the sharded check needs it; say so before starting ranks
    entries = SHARDED_ENTRIES if entries is None else entries
    base = impls_dir()
    rows = []
    for world in world_sizes:
        given = (pools or {}).get(world)
        with (contextlib.nullcontext(given) if given is not None else
              RankPool(world, backend, timeout_s=30.0, dtensor=True)) as pool:
            for e in entries:
                row = dict(implementation=e.implementation, source=e.source, target=e.target,
                           claim=_claim_text(e.check), world_size=world, dtype=e.dtype,
                           expected=_expected(e, world),
                           expected_named=e.named if _expected(e, world) != "CONFORMING"
                           else None, named="", error=None, tolerance=None, seconds=0.0,
                           note="")
                target = e.target
                if e.vendored:
                    file, _, attr = target.partition(":")
                    if not (base / file).is_file():
                        rows.append(dict(row, verdict="absent", as_expected=False,
                                         note=f"{file} is not here (tests/sharded_impls of "
                                              "a source checkout)"))
                        continue
                    target = f"{base / file}:{attr}"
                t0 = time.perf_counter()
                try:
                    rep = check_sharded(target, "whiten", pool=pool, timeout=timeout,
                                        target_name=e.target, **e.check)
                except UsageError as exc:   # e.g. torch without torch.optim.Muon
                    rows.append(dict(row, verdict="absent", as_expected=False,
                                     note=str(exc)))
                    continue
                failed = {r.name for r in rep.results if r.status == "FAIL"}
                named = sorted(failed & set(_NAMED))
                agree = next((r for r in rep.results if r.name == "agrees_with_unsharded"),
                             None)
                ok = rep.outcome == row["expected"] and (
                    row["expected_named"] is None or
                    set(named) == ({row["expected_named"]} if row["expected_named"] else set()))
                rows.append(dict(row, verdict=rep.outcome, as_expected=ok,
                                 named=", ".join(named),
                                 error=None if agree is None else agree.error,
                                 tolerance=None if agree is None else agree.tolerance,
                                 seconds=time.perf_counter() - t0,
                                 note=f"torch {importlib.metadata.version('torch')}"
                                 if not e.vendored else ""))
                if log:
                    r = rows[-1]
                    print(f"  {e.implementation} [{world} ranks]: {r['verdict']}"
                          f"{' (' + r['named'] + ')' if r['named'] else ''}"
                          f"{'' if r['as_expected'] else ' UNEXPECTED'}", file=log, flush=True)
    return rows
