"""Installing the browser tests' chromium when it is missing (``tests/chromium.py``), with ``apt-get`` and
``chromium`` replaced by scripts on PATH that log their calls; the real install runs when a machine lacks chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chromium import ChromiumUnavailable, install_chromium

COMMAND = "apt-get install -y -qq chromium"


def fake_apt_get(bindir: Path, install: str) -> Path:
    """An ``apt-get`` in ``bindir`` (PATH) that logs its arguments and, asked to install, runs ``install``."""
    log = bindir / "apt-get.log"
    script = bindir / "apt-get"
    script.write_text(f'#!/bin/sh\nPATH=/usr/bin:/bin\necho "$*" >> {log}\ncase "$1" in install) {install} ;; esac\n')
    script.chmod(0o755)
    return log


@pytest.fixture
def bindir(tmp_path, monkeypatch) -> Path:
    """The only folder on PATH, as root."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return tmp_path


def test_a_chromium_on_path_is_used_as_it_is(bindir):
    log = fake_apt_get(bindir, "exit 1")
    chromium = bindir / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    assert install_chromium() == str(chromium)
    assert not log.exists()


def test_a_missing_chromium_is_installed_refreshing_the_package_lists_when_they_lack_it(bindir):
    # install fails until `apt-get update` has run, then puts chromium on PATH
    log = fake_apt_get(bindir, f'grep -q update {bindir}/apt-get.log || exit 100; '
                               f'printf "#!/bin/sh\\n" > {bindir}/chromium; chmod 755 {bindir}/chromium')
    assert install_chromium() == str(bindir / "chromium")
    assert log.read_text().splitlines() == ["install -y -qq chromium", "update -qq", "install -y -qq chromium"]


def test_a_failed_install_names_the_command_and_shows_apts_error(bindir):
    fake_apt_get(bindir, 'echo "E: Unable to locate package chromium" >&2; exit 100')
    with pytest.raises(ChromiumUnavailable, match=f"`{COMMAND}` failed \\(exit 100\\):\nE: Unable to locate package"):
        install_chromium()


def test_without_root_or_apt_get_the_error_names_the_command(bindir, monkeypatch):
    with pytest.raises(ChromiumUnavailable, match=f"`{COMMAND}` could not run"):
        install_chromium()
    log = fake_apt_get(bindir, "exit 0")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ChromiumUnavailable, match=f"needs root: run `{COMMAND}` as root"):
        install_chromium()
    assert not log.exists()
