"""Shared helpers: run the real Snakemake workflow on a study in a temporary directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow" / "studies" / "smoke.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
             "--profile", str(REPO / "profiles" / "default")]


# A test that uses one of these fixtures belongs to its tier (the markers in pyproject.toml) and must carry it,
# so that the fast tier (README, Quick start) never runs a study, a SLURM cluster or a browser.
FIXTURE_TIERS = {"finished_smoke": "workflow", "slurm": "slurm", "chromium_executable": "browser"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse to run when a test uses a tier's fixture without the tier's marker; put the SLURM tests first."""
    unmarked = [f"{item.nodeid} uses the fixture {fixture} but has no @pytest.mark.{tier}"
                for item in items for fixture, tier in FIXTURE_TIERS.items()
                if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(tier) is None]
    if unmarked:
        raise pytest.UsageError("tests outside their tier:\n" + "\n".join(unmarked))
    # pytest-xdist's workers (pyproject.toml: -n 2 --dist loadfile) take a module at a time in this order: the SLURM
    # tests, the longest module and mostly waiting on the cluster, first, so that the other worker takes the rest.
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on ``config`` (written to workdir/study.yaml) with cwd = ``workdir``."""
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run([*SNAKEMAKE, "--configfile", str(path), *args], cwd=workdir,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned(workdir: Path, config: dict) -> dict[str, int]:
    """The jobs a dry run would execute, as {rule: count} (empty when there is nothing to do)."""
    proc = snakemake(workdir, config, "--dry-run", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


def smoke_config() -> dict:
    return yaml.safe_load(SMOKE.read_text())


@pytest.fixture(scope="session")
def finished_smoke(tmp_path_factory) -> Path:
    """A working directory in which the smoke study has run to completion (shared, do not modify)."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, smoke_config(), "--cores", "2")
    return workdir


@pytest.fixture
def smoke_copy(finished_smoke, tmp_path) -> Path:
    """A private copy of the finished smoke study (results and Snakemake's metadata, mtimes kept)."""
    dest = tmp_path / "smoke"
    shutil.copytree(finished_smoke, dest, symlinks=True)
    return dest
