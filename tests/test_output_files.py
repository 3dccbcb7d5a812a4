"""Every file swanref writes replaces what is at its path, never writes through it (issue 23)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from swanref.spec.output_files import open_output
from swanref.verify.claims import Claim, load_claim, save_claim


def _planted_link(tmp_path, name):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir(exist_ok=True)
    os.symlink(outside, folder / name)
    return folder / name, outside


def test_open_output_replaces_a_planted_link(tmp_path):
    path, outside = _planted_link(tmp_path, "report.md")
    with open_output(str(path)) as fh:
        fh.write("new")
    assert outside.read_text() == "precious"
    assert not path.is_symlink() and path.read_text() == "new"


def test_open_output_leaves_nothing_behind_on_an_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with open_output(str(path)) as fh:
            fh.write("half")
            raise RuntimeError("stop")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_open_output_refuses_a_folder_and_a_read_mode(tmp_path):
    with pytest.raises(IsADirectoryError):
        with open_output(str(tmp_path)):
            pass
    with pytest.raises(ValueError, match="not a write mode"):
        with open_output(str(tmp_path / "a"), "r"):
            pass


def test_save_claim_and_numpy_files_do_not_follow_links(tmp_path):
    path, outside = _planted_link(tmp_path, "claim.toml")
    save_claim(Claim.from_preset("you_ns5"), str(path))
    assert outside.read_text() == "precious"
    assert load_claim(str(path)) == Claim.from_preset("you_ns5")
    npy, outside2 = _planted_link(tmp_path, "g.npy")
    with open_output(str(npy), "wb") as fh:
        np.save(fh, np.eye(2), allow_pickle=False)
    assert outside2.read_text() == "precious" and np.array_equal(np.load(npy), np.eye(2))
