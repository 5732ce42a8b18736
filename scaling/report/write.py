"""The report of a fitted study, made from its tables alone: every figure (:mod:`scaling.report.figures`) as PNG
and SVG in one folder, and ``summary.md`` (:mod:`scaling.report.summary`)."""

from __future__ import annotations

import os
from pathlib import Path

from scaling.report.figures import figures, save_figure
from scaling.io import atomic_path
from scaling.report.tables import Tables
from scaling.report.summary import summary_markdown


def write_report(title: str, study: str, t: Tables, figures_dir: str | Path, summary_md: str | Path) -> list[Path]:
    """Every figure (PNG and SVG) under ``figures_dir`` and the Markdown summary; return the paths written."""
    figures_dir, summary_md = Path(figures_dir), Path(summary_md)
    written = []
    for name, fig in figures(t).items():
        written += save_figure(fig, figures_dir / name)
    rel = Path(os.path.relpath(figures_dir, summary_md.parent)).as_posix()
    with atomic_path(summary_md) as tmp:
        tmp.write_text(summary_markdown(title, study, t, rel))
    return [*written, summary_md]
