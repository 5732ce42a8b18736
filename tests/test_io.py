"""Atomic writes (scaling.io): whole files or nothing, with the usual permissions."""

import os
import stat

import pytest

from scaling import io


def test_a_written_file_has_the_mode_of_a_normal_new_file(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": 1})
    plain = tmp_path / "plain"
    plain.write_text("x")  # open() applies the umask, as atomic_path must
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) & 0o044  # group and others can read (umask 022)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.txt"]
