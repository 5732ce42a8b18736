"""Figures and a Markdown summary of a fitted study."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scaling.fit import PARAMS, best_lr_points  # noqa: E402
from scaling.io import atomic_path  # noqa: E402
from scaling.laws import overtraining_loss  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_loss_vs_compute(runs: pd.DataFrame, fits: list[dict], pred: pd.DataFrame, path: Path) -> None:
    """Best-LR validation loss vs training compute, one colour per M, with the fitted law and targets."""
    points = best_lr_points(runs)
    datasets = sorted(points["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        pts, p_ds = points[points["dataset"] == ds], pred[pred["dataset"] == ds]
        fit = next(f for f in fits if f["dataset"] == ds)
        ms = sorted(set(pts["token_multiplier"]) | set(p_ds["token_multiplier"]))
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(ms)))
        n_lo, n_hi = p_ds["n_params"].min() / 1.5, p_ds["n_params"].max() * 1.5
        for m, color in zip(ms, colors):
            n = np.geomspace(n_lo, n_hi, 100)
            ax.plot(6 * n * m * n, overtraining_loss(n, m, *(fit["params"][p] for p in PARAMS)),
                    color=color, lw=1, alpha=0.8, label=f"M={m:g}")
            for role, marker, fill in (("fit", "o", True), ("held_out", "s", False)):
                sel = p_ds[(p_ds["token_multiplier"] == m) & (p_ds["role"] == role)]
                ax.scatter(sel["flops"], sel["measured_loss"], marker=marker, s=40, zorder=3,
                           color=color if fill else "none", edgecolors=color)
            tgt = p_ds[(p_ds["token_multiplier"] == m) & (p_ds["role"] == "target")]
            ax.scatter(tgt["flops"], tgt["predicted_loss"], marker="*", s=140, color=color, edgecolors="k", zorder=4)
        ax.set(xscale="log", yscale="log", xlabel="training compute C = 6ND (FLOPs)",
               ylabel="validation loss (nats/byte)", title=f"{ds}: filled = fit, open = held out, ★ = target")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.1f"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.1f"))
        ax.legend(title="tokens per parameter", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def plot_loss_vs_lr(runs: pd.DataFrame, path: Path) -> None:
    """Validation loss vs peak learning rate, one line per (size, M); diverged runs marked ×."""
    datasets = sorted(runs["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        r = runs[runs["dataset"] == ds]
        groups = sorted(r.groupby(["n_params", "size", "token_multiplier"]).groups)
        colors = plt.cm.plasma(np.linspace(0, 0.85, len(groups)))
        for (n, size, m), color in zip(groups, colors):
            g = r[(r["size"] == size) & (r["token_multiplier"] == m)]
            ok = g[g["status"] == "ok"].groupby("lr")["val_loss"].mean()
            ax.plot(ok.index, ok.values, "o-", color=color, label=f"{size} (N={n:,}), M={m:g}")
            bad = g[g["status"] != "ok"]
            if len(bad):
                ax.scatter(bad["lr"], bad["initial_loss"], marker="x", s=60, color=color)
        ax.set(xscale="log", xlabel="peak learning rate", ylabel="validation loss (nats/byte)",
               title=f"{ds}: loss vs learning rate (× = diverged, at initial loss)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def summary_markdown(title: str, study: str, runs: pd.DataFrame, fits: list[dict], pred: pd.DataFrame) -> str:
    counts = runs["status"].value_counts().to_dict()
    out = [f"# {title}", "", f"Study `{study}`: {len(runs)} runs "
           f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
           f"{runs['flops'].sum():.3g} FLOPs of training, {runs['wall_s'].sum() / 60:.1f} CPU-minutes.", ""]
    for f in fits:
        out += [f"## Over-training law on `{f['dataset']}`", "", f"`{f['formula']}`, fitted on {f['n_points']} "
                f"best-LR points (η = −b/2 = {f['compute_form']['eta']:.4f}):", "",
                _table(pd.DataFrame({"parameter": list(PARAMS),
                                     "value": [f["params"][p] for p in PARAMS],
                                     "std. error": [f["stderr"][p] for p in PARAMS]})), ""]
        if f.get("at_bound"):
            out += [f"**Warning:** {', '.join(f['at_bound'])} ended on the bound of its physical range; "
                    "the fit set is too small or too noisy for this law, so treat its predictions with care.", ""]
        p = pred[(pred["dataset"] == f["dataset"]) & (pred["role"] != "fit")]
        if len(p):
            p = p.assign(rel_error_pct=100 * p["rel_error"])
            interval = [c for c in ("predicted_loss_lo", "predicted_loss_hi") if c in p]
            heading = f"Predictions with {f['level']:.0%} prediction intervals:" if interval else "Predictions:"
            out += [heading, "", _table(p[["size", "n_params", "token_multiplier", "role", "predicted_loss",
                                           *interval, "measured_loss", "rel_error_pct"]]), ""]
    return "\n".join(out) + "\n"


def write_report(title: str, study: str, runs: pd.DataFrame, fits: list[dict], pred: pd.DataFrame,
                 compute_png: Path, lr_png: Path, summary_md: Path) -> None:
    plot_loss_vs_compute(runs, fits, pred, Path(compute_png))
    plot_loss_vs_lr(runs, Path(lr_png))
    with atomic_path(summary_md) as tmp:
        tmp.write_text(summary_markdown(title, study, runs, fits, pred))
