"""tests/mutation_check.py stays runnable: every mutation still applies to the current sources
(a refactor that silently disarms one would otherwise go unnoticed), and it works on a copy."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tests" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutation_applies():
    mc = _load()
    stale = [name for path, old, _, name in mc.MUTATIONS if old not in (ROOT / path).read_text()]
    assert not stale, f"mutations that no longer apply: {stale}"


def test_mutations_are_written_to_a_copy_only(tmp_path, monkeypatch):
    mc = _load()
    path, old, new, _ = mc.MUTATIONS[0]
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text((ROOT / path).read_text())
    before = (ROOT / path).read_text()
    seen = {}

    def fake_run(cmd, cwd, **kw):
        seen["text"] = (tmp_path / path).read_text()
        seen["cwd"] = cwd
        return None
    monkeypatch.setattr(mc.subprocess, "run", fake_run)
    mc.run(tmp_path, path, old, new)
    assert new in seen["text"] and seen["cwd"] == tmp_path
    assert (tmp_path / path).read_text() == before == (ROOT / path).read_text()
