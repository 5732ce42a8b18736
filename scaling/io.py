"""Atomic file writes: write to a temporary file beside the target, fsync, rename.

A reader never sees a half-written file: either the old file or the whole new one. A write that fails
(disk full, no permission) raises :class:`WriteError`, which names the target and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a table is written: the Snakefile's parse loads this module without pandas
    import pandas as pd
    import pyarrow as pa


def _file_mode() -> int:
    """The mode of a new file under the process's umask (0644 under the usual umask 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


class WriteError(OSError):
    """A file :func:`atomic_path` could not write; the message names the file (not its temporary) and the fix."""

    def __init__(self, target: Path, cause: OSError):
        self.target, self.cause = target, cause
        fix = ("free disk space" if cause.errno in (errno.ENOSPC, errno.EDQUOT)
               else f"make sure {target.parent} is writable and has room")
        super().__init__(f"{target}: could not write it ({cause.strerror or cause}); fix: {fix}, then rerun")


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path in ``target``'s directory; on success, fsync it and rename onto ``target``.

    An OSError of the write (one that names no other file) becomes a :class:`WriteError` naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(target, e) from e
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes files private (0600); give them the usual permissions
        os.replace(tmp, target)
    except WriteError as e:
        if e.target == Path(tmp):  # an atomic_path writing our temporary file: name ours
            raise WriteError(target, e.cause) from e.cause
        raise
    except OSError as e:
        if e.filename in (None, tmp):
            raise WriteError(target, e) from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json(target: str | Path, obj) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def spec_json(spec: dict) -> str:
    """A run's or trunk segment's spec as its rule records it in its params: when it changes, Snakemake retrains."""
    return json.dumps(spec, sort_keys=True)


def spec_digest(spec: dict) -> str:
    """SHA-256 of :func:`spec_json`. A run keeps it in its metrics.json, so that ``scaling status`` can tell a run
    finished under a study that has changed since, which Snakemake will retrain."""
    return hashlib.sha256(spec_json(spec).encode()).hexdigest()


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def write_parquet(target: str | Path, table: pd.DataFrame | pa.Table) -> None:
    """A DataFrame (its index dropped) or an Arrow table (a training job's curve: no pandas to import) as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(target) as tmp:
        pq.write_table(table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False), tmp)


class RunFileError(RuntimeError):
    """A run's file that cannot be read; the message names the file and what to do."""


def retrain_hint(run_dir: Path) -> str:
    return f"fix: delete {run_dir} and rerun snakemake to retrain the run (or restore the file from a backup)"


def read_metrics(metrics_path: str | Path, required: dict[str, bool]) -> dict:
    """A finished run's ``metrics.json``; raises :class:`RunFileError` naming the file and the fix if it is
    unreadable or lacks one of the ``required`` fields ({name: may it be null})."""
    metrics_path = Path(metrics_path)
    run_dir = metrics_path.parent
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunFileError(f"{metrics_path}: unreadable ({e}); {retrain_hint(run_dir)}") from None
    if not isinstance(metrics, dict):
        raise RunFileError(f"{metrics_path}: not a JSON object; {retrain_hint(run_dir)}")
    missing = [k for k, nullable in required.items() if k not in metrics or (metrics[k] is None and not nullable)]
    if missing:
        raise RunFileError(f"{metrics_path}: lacks the required field(s) {missing}; {retrain_hint(run_dir)}")
    return metrics
