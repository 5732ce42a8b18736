"""Atomic writes (scaling.io): whole files or nothing, with the usual permissions."""

import errno
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


def test_a_full_disk_names_the_file_and_the_fix_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    io.write_json(target, {"old": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as fsync or write report a full disk: no file named

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(io.WriteError) as err:
        io.write_json(target, {"new": True})
    assert str(err.value) == f"{target}: could not write it (No space left on device); fix: free disk space, then rerun"
    assert io.read_json(target) == {"old": True} and os.listdir(tmp_path) == ["t.json"]
    with pytest.raises(io.WriteError, match=rf"^{target}: .*No space left"):  # a write inside another is named by it
        with io.atomic_path(target) as tmp:
            io.write_json(tmp, {"nested": True})


def test_an_error_naming_another_file_is_left_as_it_is(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        with io.atomic_path(tmp_path / "t.txt") as tmp:
            tmp.write_text((tmp_path / "missing.txt").read_text())
    assert os.listdir(tmp_path) == []
