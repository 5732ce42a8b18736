"""Figures and a Markdown summary of a fitted study, made from its tables alone.

Inputs (``results/<study>/tables/``): ``runs``, ``downstream`` (may have no
rows), ``fits`` (one row per fitted law: ``overtraining``, ``downstream``,
``optimal_lr``) and ``predictions`` (one row per predicted point, column
``law``). :class:`Tables` reads them.

Outputs: every figure of :data:`FIGURES` as PNG and SVG in one folder, and
``summary.md``. The set of files never depends on the data, so a workflow can
declare them: a figure whose data the study does not have (no downstream
tasks, no learning-rate sweep) is a placeholder panel that says so.

Each ``plot_*`` function is pure: tables in, a matplotlib ``Figure`` out
(nothing written); :func:`save_figure` writes it; :func:`write_report` does all.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, NullFormatter, PercentFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scaling.fit import best_lr_points, canonical  # noqa: E402
from scaling.io import atomic_path  # noqa: E402
from scaling.laws import LAWS  # noqa: E402
from scaling.optimal_lr import best_lr_grid  # noqa: E402
from scaling.schema import read_table  # noqa: E402

# name → title; the order is the report's
FIGURES = {
    "loss_vs_compute": "Loss vs compute",
    "downstream_vs_loss": "Downstream error vs loss",
    "loss_vs_lr": "Loss vs learning rate",
    "residuals": "Fit residuals",
    "optimal_lr": "Optimal learning rate",
}
FORMATS = ("png", "svg")
DPI = 150
PANEL = (6.0, 4.5)  # inches per panel: a PNG panel is 900 × 675 pixels
LOSS = "validation loss (nats/token)"
COMPUTE = "training compute C = 6ND (FLOPs)"
ROLE_MARKERS = {"fit": ("o", True), "held_out": ("s", False)}  # marker, filled
STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8,
    "legend.title_fontsize": 8, "axes.grid": True, "axes.grid.which": "both", "grid.alpha": 0.3,
    "svg.hashsalt": "scaling-report",  # the same SVG for the same figure
}


@dataclass(frozen=True)
class Tables:
    """The tables a report is made from (pandas frames, conformed to :mod:`scaling.schema`)."""

    runs: pd.DataFrame
    downstream: pd.DataFrame
    fits: pd.DataFrame
    predictions: pd.DataFrame

    @classmethod
    def read(cls, directory: str | Path) -> "Tables":
        """``runs``, ``downstream``, ``fits`` and ``predictions`` from ``directory/<table>.parquet``."""
        d = Path(directory)
        return cls(*(read_table(d / f"{t}.parquet", t).to_pandas() for t in ("runs", "downstream", "fits",
                                                                              "predictions")))


# -- selecting from the tables ------------------------------------------------------------------------------------
def law_fits(fits: pd.DataFrame, law: str) -> pd.DataFrame:
    """The rows of ``fits`` for ``law``; for ``overtraining``, the study's own loss fit (no ``task``)."""
    rows = fits[fits["law"] == law]
    if law == "overtraining" and "task" in rows:
        rows = rows[rows["task"].isna()]
    return rows


def law_predictions(pred: pd.DataFrame, law: str) -> pd.DataFrame:
    return pred[pred["law"] == law]


def params(row, law: str) -> dict[str, float]:
    """The fitted parameters of a ``fits`` row, by the law's parameter names."""
    return {p: float(row[p]) for p in LAWS[law].params}


def downstream_runs(runs: pd.DataFrame, downstream: pd.DataFrame) -> pd.DataFrame:
    """Downstream rows of ``ok`` runs joined to their run, with ``error`` = 1 − accuracy and ``chance_error``."""
    keep = [c for c in ("run_id", "dataset", "size", "n_params", "token_multiplier", "lr", "val_loss", "flops")
            if c in runs]
    own = downstream.drop(columns=[c for c in keep if c != "run_id" and c in downstream])  # the run's, not its own
    df = own.merge(runs.loc[runs["status"] == "ok", keep], on="run_id")
    if "kind" not in df:
        df["kind"] = "task"
    return df.assign(error=1 - df["accuracy"], chance_error=1 - df["random_baseline_accuracy"])


def lr_sweep_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The best learning rate of every (dataset, N, D) trained at two or more rates, with ``edge``.

    ``edge`` is ``high`` or ``low`` when the best rate is the largest or smallest
    rate that trained (the optimum may lie beyond the sweep), else empty;
    the same points and edge test as the optimal-LR fit (:func:`scaling.optimal_lr.best_lr_grid`).
    """
    ok = canonical(runs)
    if ok.empty or "lr" not in ok:
        return pd.DataFrame(columns=["dataset", "n_params", "tokens", "token_multiplier", "lr", "n_lrs", "edge"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the figure marks those points instead
        best = best_lr_grid(ok, ["dataset"])
    best = best[best["n_lrs"] >= 2].reset_index(drop=True)
    top = ok.groupby(["dataset", "n_params", "tokens"])["lr"].max()
    is_top = [np.isclose(r.lr, top[(r.dataset, r.n_params, r.tokens)]) for r in best.itertuples()]
    best["edge"] = np.where(best["lr_at_edge"], np.where(is_top, "high", "low"), "")
    return best


# -- drawing helpers ----------------------------------------------------------------------------------------------
def _styled(fn):
    """Draw ``fn``'s figure under the report's style."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _panels(n_cols: int, n_rows: int = 1) -> tuple[Figure, np.ndarray]:
    fig = plt.figure(figsize=(PANEL[0] * n_cols, PANEL[1] * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def m_colors(*frames: pd.DataFrame) -> dict[float, tuple]:
    """One viridis colour per token multiplier M of ``frames``, the same in every figure of a study."""
    ms = sorted(set().union(*(f["token_multiplier"].dropna().astype(float) for f in frames if len(f))))
    return dict(zip(ms, plt.cm.viridis(np.linspace(0, 0.9, max(len(ms), 1)))))


def _interval(ax, x, lo, hi, color, **kw) -> None:
    """Vertical bars from ``lo`` to ``hi`` at ``x`` (rows with a NaN bound are skipped)."""
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lo, hi))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.vlines(x[ok], lo[ok], hi[ok], colors=[color], lw=1.3, gid="interval", **kw)
        ax.scatter(np.r_[x[ok], x[ok]], np.r_[lo[ok], hi[ok]], marker="_", s=40, color=color, lw=1.3, **kw)


def _roles(ax, df: pd.DataFrame, x: str, y: str, color) -> None:
    """Measured points: fit filled circles, held-out open squares."""
    for role, (marker, filled) in ROLE_MARKERS.items():
        sel = df[df["role"] == role]
        if len(sel):
            ax.scatter(sel[x], sel[y], marker=marker, s=40, zorder=3, color=color if filled else "none",
                       edgecolors=color, lw=1.2, gid=role)


def _predicted(ax, pred: pd.DataFrame, x: str, y: str, color) -> None:
    """The predictions of ``pred``'s held-out points and targets: interval bars (``y``_lo/hi), and stars for targets."""
    shown = pred[pred["role"].isin(["held_out", "target"])]
    if f"{y}_lo" in shown:
        _interval(ax, shown[x], shown[f"{y}_lo"], shown[f"{y}_hi"], color)
    tgt = pred[pred["role"] == "target"]
    if len(tgt):
        ax.scatter(tgt[x], tgt[y], marker="*", s=150, color=color, edgecolors="k", zorder=4, gid="target")


def _role_handles(level: float | None, target: bool, predicted: bool = True) -> list[Line2D]:
    """Legend entries for the point styles, in black."""
    k = dict(color="k", ls="none")
    out = [Line2D([], [], marker="o", label="fit (measured)", **k),
           Line2D([], [], marker="s", mfc="none", label="held out (measured)", **k)]
    if predicted:
        lvl = f"{level:.0%} " if level is not None and np.isfinite(level) else ""
        out.append(Line2D([], [], marker="|", ms=12, label=f"prediction, {lvl}interval", **k))
    if target:
        out.append(Line2D([], [], marker="*", ms=11, mec="k", label="target (predicted)", **k))
    return out


def _tidy_log_axes(ax, which: str = "xy") -> None:
    """Minor-tick labels of a log axis whose view holds a power of ten: none, or only 2 and 5 for a short span.

    Matplotlib's default labels every minor tick of a short span, and they overlap.
    """
    for name in which:
        axis, limits = (ax.xaxis, ax.get_xlim()) if name == "x" else (ax.yaxis, ax.get_ylim())
        lo, hi = sorted(limits)
        if axis.get_scale() != "log" or lo <= 0 or math.floor(math.log10(hi)) < math.ceil(math.log10(lo)):
            continue
        axis.set_minor_formatter(FuncFormatter(_two_and_five) if math.log10(hi / lo) < 2 else NullFormatter())


def _two_and_five(v: float, _pos=None) -> str:
    exponent = math.floor(math.log10(v) + 1e-9)
    mantissa = round(v / 10**exponent)
    return rf"${mantissa}\times10^{{{exponent}}}$" if mantissa in (2, 5) else ""


def _ticks_at(axis, values, most: int = 8) -> None:
    """Label a log axis at ``values`` (a sweep's rates) when there are few of them, instead of at powers of ten."""
    if 1 < len(values) <= most:
        axis.set_ticks(values, labels=[f"{v:.2g}" for v in values])
        axis.set_minor_formatter(NullFormatter())


def _level(fits: pd.DataFrame) -> float | None:
    return float(fits["level"].iloc[0]) if "level" in fits and len(fits) else None


@_styled
def placeholder(title: str, message: str) -> Figure:
    """A one-panel figure that only says why there is nothing to plot."""
    fig, axes = _panels(1)
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=13, weight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.42, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    fig.placeholder = True
    return fig


def is_placeholder(fig: Figure) -> bool:
    return getattr(fig, "placeholder", False)


# -- the figures --------------------------------------------------------------------------------------------------
@_styled
def plot_loss_vs_compute(runs: pd.DataFrame, fits: pd.DataFrame, pred: pd.DataFrame) -> Figure:
    """Best-LR validation loss vs compute, one colour per M, with the fitted over-training law per M.

    Measured points are filled (fit set) or open (held out); a held-out run's and
    a target's prediction interval is a vertical bar, a target's prediction a star.
    Log-log axes: at fixed M the law is a power law in compute plus a constant.
    """
    ot_fits, ot = law_fits(fits, "overtraining"), law_predictions(pred, "overtraining")
    colors = m_colors(runs, ot)
    datasets = sorted(set(runs["dataset"]) | set(ot["dataset"]))
    fig, axes = _panels(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        p, fit = ot[ot["dataset"] == ds], ot_fits[ot_fits["dataset"] == ds]
        if p.empty:  # no fit for this dataset: the measured best-LR points only
            p = best_lr_points(runs[runs["dataset"] == ds]).assign(role="fit", measured_loss=lambda d: d["loss"])
        for m in sorted(set(p["token_multiplier"])):
            color, at_m = colors[m], p[p["token_multiplier"] == m]
            if len(fit):
                n = np.geomspace(p["n_params"].min() / 1.5, p["n_params"].max() * 1.5, 200)
                ax.plot(6 * m * n * n, LAWS["overtraining"](n, m, **params(fit.iloc[0], "overtraining")),
                        color=color, lw=1.2, alpha=0.85, label=f"M = {m:g}")
            _roles(ax, at_m, "flops", "measured_loss", color)
            _predicted(ax, at_m, "flops", "predicted_loss", color)
        ax.set(xscale="log", yscale="log", xlabel=COMPUTE, ylabel=LOSS,
               title=f"{ds}: over-training law" + ("" if len(fit) else " (not fitted)"))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))  # a loss axis spans little more than 1 decade
        _tidy_log_axes(ax, "x")
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + _role_handles(_level(fit), bool((p["role"] == "target").any()), bool(len(fit))),
                  title="tokens per parameter M = D/N", loc="best")
    return fig


@_styled
def plot_downstream_vs_loss(runs: pd.DataFrame, downstream: pd.DataFrame, fits: pd.DataFrame,
                            pred: pd.DataFrame) -> Figure:
    """Downstream top-1 error vs validation loss; a placeholder when the study has no downstream rows.

    Per dataset, one panel per fitted task set (its average error: every run in
    grey, best-LR points filled/open as fit/held out, the fitted law
    Err(L) = ε − k·exp(−γL), predictions of held-out runs and targets with
    interval bars, random chance dashed), then one panel with every single
    task's error (one colour per task, ordered easy → hard, chance dashed).
    """
    if downstream.empty:
        return placeholder("Downstream error vs loss", "No downstream tasks in this study:\n"
                           "no run was evaluated on a task, so there is no error to plot.")
    df = downstream_runs(runs, downstream)
    ds_fits, ds_pred = law_fits(fits, "downstream"), law_predictions(pred, "downstream")
    datasets = sorted(set(df["dataset"]))
    sets = {ds: _task_sets(df[df["dataset"] == ds], ds_fits[ds_fits["dataset"] == ds]) for ds in datasets}
    fig, axes = _panels(max(len(s) for s in sets.values()) + 1, len(datasets))
    for row, ds in zip(axes, datasets):
        d = df[df["dataset"] == ds]
        for ax, task_set in zip(row, sets[ds]):
            fit, p = ds_fits[ds_fits["dataset"] == ds], ds_pred[ds_pred["dataset"] == ds]
            if "task" in fit:
                fit = fit[fit["task"] == task_set]
            if "task" in p:
                p = p[p["task"] == task_set]
            _average_panel(ax, ds, task_set, d[(d["kind"] == "average") & (d["task"] == task_set)], fit, p)
        _tasks_panel(row[-1], ds, d[d["kind"] == "task"])
        for ax in row[len(sets[ds]):-1]:
            ax.set_axis_off()
    return fig


def _task_sets(df: pd.DataFrame, fits: pd.DataFrame) -> list[str]:
    """The task sets of a dataset's average panels: the fitted ones, else those the table averages."""
    if len(fits) and "task" in fits:
        return sorted(fits["task"].dropna().unique())
    return sorted(df.loc[df["kind"] == "average", "task"].unique())


def _average_panel(ax, ds: str, task_set: str, runs: pd.DataFrame, fit: pd.DataFrame, pred: pd.DataFrame) -> None:
    """One task set's average error vs loss: runs, best-LR points, the law, predictions, chance."""
    color = "C0"
    ax.scatter(runs["val_loss"], runs["error"], s=12, color="0.7", zorder=2, label="every run")
    _roles(ax, pred, "measured_loss", "measured_error", color)
    xs = pd.concat([runs["val_loss"], pred["measured_loss"], pred["predicted_loss"]]).dropna()
    if len(fit) and len(xs):
        span = xs.max() - xs.min()
        L = np.linspace(xs.min() - 0.05 * span, xs.max() + 0.05 * span, 200)
        law = params(fit.iloc[0], "downstream")
        ax.plot(L, LAWS["downstream"](L, **law), color=color, lw=1.3,
                label=f"Err(L) = {law['epsilon']:.3g} − {law['k']:.3g}·exp(−{law['gamma']:.3g}·L)")
    _predicted(ax, pred, "predicted_loss", "predicted_error", color)
    chance = runs["chance_error"].mean()
    if np.isfinite(chance):
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"random chance ({chance:.0%})")
    ax.set(xlabel=LOSS, ylabel=f"average top-1 error of {task_set}", title=f"{ds}: {task_set}, average error"
           + ("" if len(fit) else " (no law fitted)"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + _role_handles(_level(fit), (pred["role"] == "target").any(), bool(len(fit))),
              loc="best")


def task_order(tasks: pd.DataFrame) -> list[str]:
    """Tasks from easiest to hardest: by mean error relative to chance, (chance − error) / chance, descending.

    A task near chance is hard whatever its chance level; without a chance level, by mean error.
    """
    chance = tasks["chance_error"].where(tasks["chance_error"] > 0)
    gain = ((chance - tasks["error"]) / chance).fillna(-tasks["error"])
    return list(gain.groupby(tasks["task"]).mean().sort_values(ascending=False, kind="stable").index)


def _tasks_panel(ax, ds: str, tasks: pd.DataFrame) -> None:
    """Every single task's error vs loss, one colour per task, legend ordered from easiest to hardest."""
    order = task_order(tasks)
    colors = plt.cm.tab20(np.linspace(0, 1, 20))[np.arange(len(order)) % 20] if len(order) > 10 else \
        [f"C{i}" for i in range(len(order))]
    for task, color in zip(order, colors):
        t = tasks[tasks["task"] == task]
        ax.scatter(t["val_loss"], t["error"], s=14, color=color, label=task)
    # tasks share chance levels (2-way, 4-way …): one dashed line per level, named by its tasks
    chance = tasks.groupby("task")["chance_error"].mean().dropna()
    for level, names in chance.groupby(chance.round(4)):
        ax.axhline(level, color="0.4", ls="--", lw=0.9, gid="chance")
        ax.annotate(f"chance {level:.0%}", (1, level), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                    textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.3")
    ax.set(xlabel=LOSS, ylabel="top-1 error", title=f"{ds}: single tasks")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if len(order):
        ax.legend(title="easiest → hardest", loc="upper left", bbox_to_anchor=(1.01, 1), ncols=1 + len(order) // 16)


@_styled
def plot_loss_vs_lr(runs: pd.DataFrame) -> Figure:
    """Validation loss vs peak learning rate (log x): one colour per size, one line style and marker per M.

    Diverged runs are crosses along the top edge (they have no loss).
    """
    datasets = sorted(runs["dataset"].unique())
    fig, axes = _panels(len(datasets))
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for ax, ds in zip(axes[0], datasets):
        r = runs[runs["dataset"] == ds]
        sizes = r.groupby("size")["n_params"].first().sort_values()
        colors = dict(zip(sizes.index, plt.cm.plasma(np.linspace(0, 0.85, len(sizes)))))
        ms = sorted(r["token_multiplier"].unique())
        line = {m: styles[i % len(styles)] for i, m in enumerate(ms)}
        for (size, m), g in r.groupby(["size", "token_multiplier"]):
            ok = g[g["status"] == "ok"].groupby("lr")["val_loss"].mean()
            ax.plot(ok.index, ok.values, ls=line[m][0], marker=line[m][1], ms=4.5, color=colors[size])
            bad = g[g["status"] != "ok"]
            if len(bad):
                ax.scatter(bad["lr"], np.full(len(bad), 0.97), marker="x", s=50, color=colors[size],
                           transform=ax.get_xaxis_transform(), clip_on=False, zorder=4, gid="diverged")
        ax.set(xscale="log", xlabel="peak learning rate", ylabel=LOSS,
               title=f"{ds}: loss vs learning rate")
        _ticks_at(ax.xaxis, sorted(r["lr"].dropna().unique()))
        ok_loss = r.loc[r["status"] == "ok", "val_loss"]
        if len(ok_loss):
            lo, hi = ok_loss.min(), ok_loss.max()
            pad = 0.08 * (hi - lo) or 0.05
            ax.set_ylim(lo - pad, hi + 2.5 * pad)  # room for the diverged row at the top
        handles = [Line2D([], [], color=colors[s], lw=2.5, label=f"{s} (N = {n:,})") for s, n in sizes.items()]
        if len(ms) > 1:
            handles += [Line2D([], [], color="k", ls=line[m][0], marker=line[m][1], ms=4.5, label=f"M = {m:g}")
                        for m in ms]
        if (r["status"] != "ok").any():
            handles.append(Line2D([], [], color="k", marker="x", ls="none", label="diverged"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def relative_residuals(pred: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """``pred`` with ``residual`` = 100·(measured/predicted − 1) and the interval ``lo``/``hi`` on that scale.

    ``quantity`` is ``loss`` or ``error``; rows without a measurement are dropped.
    """
    p = pred[pred[f"measured_{quantity}"].notna()]
    predicted = p[f"predicted_{quantity}"]
    out = p.assign(residual=100 * (p[f"measured_{quantity}"] / predicted - 1))
    for bound in ("lo", "hi"):
        col = f"predicted_{quantity}_{bound}"
        out[bound] = 100 * (p[col] / predicted - 1) if col in p else np.nan
    return out


RESIDUAL_LAWS = {"overtraining": ("loss", "validation loss"), "downstream": ("error", "average top-1 error")}


@_styled
def plot_residuals(runs: pd.DataFrame, pred: pd.DataFrame) -> Figure:
    """Relative residual (measured/predicted − 1, in %) vs compute for the loss law and the downstream law.

    One column per law (per task set for the downstream law), one row per
    dataset; colour per M, filled = fit, open = held out; a held-out point's
    prediction interval, on the same scale, is a bar.
    """
    colors = m_colors(runs, pred)
    panels: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}  # (law, task set) → dataset → measured rows
    for law, (q, _) in RESIDUAL_LAWS.items():
        p = law_predictions(pred, law)
        p = p[p[f"measured_{q}"].notna()] if f"measured_{q}" in p else p.iloc[:0]
        task = p["task"].fillna("") if law == "downstream" and "task" in p else pd.Series("", index=p.index)
        for (t, ds), rows in p.groupby([task, p["dataset"]]):
            panels.setdefault((law, t), {})[ds] = rows
    datasets = sorted({ds for per in panels.values() for ds in per})
    fig, axes = _panels(max(len(panels), 1), max(len(datasets), 1))
    for j, ((law, task), per) in enumerate(panels.items()):
        for i, ds in enumerate(datasets):
            if ds in per:
                _residual_panel(axes[i, j], ds, law, task, per[ds], colors)
            else:
                axes[i, j].set_axis_off()
    if not panels:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no measured point has a prediction", ha="center", transform=axes[0, 0].transAxes)
    return fig


def _residual_panel(ax, ds: str, law: str, task: str, pred: pd.DataFrame, colors: dict) -> None:
    q, what = RESIDUAL_LAWS[law]
    res = relative_residuals(pred, q)
    for m, at_m in res.groupby("token_multiplier"):
        held = at_m[at_m["role"] == "held_out"]
        _interval(ax, held["flops"], held["lo"], held["hi"], colors[m], alpha=0.5)
        _roles(ax, at_m, "flops", "residual", colors[m])
    ax.axhline(0, color="k", lw=1)
    title = (f"{ds}: over-training law" if law == "overtraining" else
             f"{ds}: downstream law{f' ({task})' if task else ''}, error from the predicted loss")
    ax.set(xscale="log", xlabel=COMPUTE, ylabel=f"measured / predicted − 1, {what} (%)", title=title)
    _tidy_log_axes(ax)
    handles = [Line2D([], [], color=colors[m], marker="o", ls="none", label=f"M = {m:g}")
               for m in sorted(res["token_multiplier"].unique())]
    ax.legend(handles=handles + _role_handles(None, False)[:2]
              + [Line2D([], [], color="k", marker="|", ms=12, ls="none", label="prediction interval")], loc="best")


@_styled
def plot_optimal_lr(runs: pd.DataFrame, fits: pd.DataFrame, pred: pd.DataFrame) -> Figure:
    """Best learning rate per (size, M) vs N, log-log, with the fitted η*(N, D = M·N) per M.

    Points whose best rate is the largest (▲) or smallest (▼) rate of their
    sweep only bound η*. A placeholder when no (size, M) was trained at two or
    more learning rates.
    """
    best = lr_sweep_points(runs)
    if best.empty:
        return placeholder("Optimal learning rate", "No learning-rate sweep in this study:\n"
                           "every (size, M) was trained at one learning rate.")
    lr_fits, lr_pred = law_fits(fits, "optimal_lr"), law_predictions(pred, "optimal_lr")
    colors = m_colors(runs, pred)
    datasets = sorted(best["dataset"].unique())
    fig, axes = _panels(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        b, fit, p = best[best["dataset"] == ds], lr_fits[lr_fits["dataset"] == ds], lr_pred[lr_pred["dataset"] == ds]
        tgt = p[p["role"] == "target"]
        n_all = pd.concat([b["n_params"], tgt["n_params"]]).astype(float)
        for m in sorted(b["token_multiplier"].unique()):
            color, at_m = colors[m], b[b["token_multiplier"] == m]
            if len(fit):
                n = np.geomspace(n_all.min() / 1.5, n_all.max() * 1.5, 100)
                ax.plot(n, LAWS["optimal_lr"](n, m * n, **params(fit.iloc[0], "optimal_lr")), color=color, lw=1.2,
                        label=f"η*(N, D = {m:g}·N)")
            for edge, marker in (("", "o"), ("high", "^"), ("low", "v")):
                sel = at_m[at_m["edge"] == edge]
                if len(sel):
                    ax.scatter(sel["n_params"], sel["lr"], marker=marker, s=45, zorder=3, lw=1.2, edgecolors=color,
                               color=color if edge == "" else "none", gid=f"best_lr{'_' + edge if edge else ''}")
        for m, t in p.groupby("token_multiplier"):
            _predicted(ax, t, "n_params", "predicted_lr", colors.get(m, "k"))
        ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="best peak learning rate",
               title=f"{ds}: best learning rate per (N, M)" + ("" if len(fit) else " (no η* law fitted)"))
        if fit.empty and tgt.empty:  # the axis spans the sweep: label its rates
            _ticks_at(ax.yaxis, sorted(runs.loc[runs["dataset"] == ds, "lr"].dropna().unique()))
        _tidy_log_axes(ax)
        handles, _ = ax.get_legend_handles_labels()
        if fit.empty:
            handles = [Line2D([], [], color=colors[m], marker="o", ls="none", label=f"M = {m:g}")
                       for m in sorted(b["token_multiplier"].unique())]
        k = dict(color="k", ls="none")
        if (b["edge"] == "").any():
            handles.append(Line2D([], [], marker="o", label="best rate of the sweep", **k))
        if (b["edge"] == "high").any():
            handles.append(Line2D([], [], marker="^", mfc="none", label="at the sweep's top: η* may be higher", **k))
        if (b["edge"] == "low").any():
            handles.append(Line2D([], [], marker="v", mfc="none", label="at the sweep's bottom: η* may be lower", **k))
        if len(tgt):
            handles.append(Line2D([], [], marker="*", ms=11, label="target (predicted, with interval)", **k))
        ax.legend(handles=handles, loc="best")
    return fig


def figures(t: Tables) -> dict[str, Figure]:
    """Every figure of :data:`FIGURES`, drawn from ``t`` (placeholders where the study has no data for one)."""
    return {
        "loss_vs_compute": plot_loss_vs_compute(t.runs, t.fits, t.predictions),
        "downstream_vs_loss": plot_downstream_vs_loss(t.runs, t.downstream, t.fits, t.predictions),
        "loss_vs_lr": plot_loss_vs_lr(t.runs),
        "residuals": plot_residuals(t.runs, t.predictions),
        "optimal_lr": plot_optimal_lr(t.runs, t.fits, t.predictions),
    }


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (each atomically) and close it; return the paths."""
    paths = []
    with plt.rc_context(STYLE):
        for fmt in FORMATS:
            path = Path(f"{stem}.{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
            paths.append(path)
    plt.close(fig)
    return paths


# -- the summary ----------------------------------------------------------------------------------------------------
def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _interval_text(lo, hi) -> str:
    return "" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.4g}, {hi:.4g}]"


def _pct(level) -> str:
    return f"{level:.0%}" if pd.notna(level) else ""


def _params_table(row, law: str) -> str:
    names = LAWS[law].params
    return _table(pd.DataFrame({
        "parameter": list(names),
        "value": [row[p] for p in names],
        "std. error": [row.get(f"{p}_stderr", np.nan) for p in names],
        f"{_pct(row.get('level'))} interval": [_interval_text(row.get(f"{p}_lo"), row.get(f"{p}_hi")) for p in names],
    }))


def _fit_head(row, points: str) -> list[str]:
    out = [f"`{row['formula']}`, fitted by `{row['method']}` on {int(row['n_points'])} {points}:", "",
           _params_table(row, row["law"]), ""]
    if row["law"] == "overtraining" and pd.notna(row.get("eta")):
        out += [f"Compute exponent at fixed M: η = −b/2 = {row['eta']:.4f}.", ""]
    at_bound = _names(row.get("at_bound"))
    if at_bound:
        out += [f"**Warning:** {', '.join(at_bound)} ended on the bound of its physical range; the fit set is too "
                "small or too noisy for this law, so treat its predictions with care.", ""]
    return out


def _names(value) -> list[str]:
    """A list of names given as a list, an array, a JSON list or a comma-separated string (None: none)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.split(",")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(v).strip() for v in np.atleast_1d(value) if str(v).strip()]


def _predictions(p: pd.DataFrame, q: str, level) -> pd.DataFrame:
    """Predicted vs measured ``q`` (loss, error or lr) of held-out points and targets, one row each."""
    p = p[p["role"] != "fit"]
    rel = "rel_error" if q in ("loss", "lr") else "error_rel_error"
    cov = "covered" if q in ("loss", "lr") else "error_covered"
    out = pd.DataFrame({"size": p["size"], "N": p["n_params"], "M": p["token_multiplier"],
                        "role": p["role"].str.replace("_", " ")})
    if q == "error":
        out["predicted loss"] = p["predicted_loss"]
    out[f"predicted {q}"] = p[f"predicted_{q}"]
    out[f"{_pct(level)} interval"] = [_interval_text(lo, hi) for lo, hi in
                                      zip(p.get(f"predicted_{q}_lo", np.nan * p[f"predicted_{q}"]),
                                          p.get(f"predicted_{q}_hi", np.nan * p[f"predicted_{q}"]))]
    out[f"measured {q}"] = p[f"measured_{q}"]
    out["rel. error (%)"] = 100 * p[rel] if rel in p else np.nan
    out["covered"] = [None if pd.isna(v) else bool(v) for v in p[cov]] if cov in p else None
    if q == "error" and "error_at_measured_loss" in p:  # the error law alone, without the loss law's miss
        out["error law at measured loss"] = p["error_at_measured_loss"]
    return out


def _section(title: str, fits: pd.DataFrame, pred: pd.DataFrame, q: str, points: str, note: str) -> list[str]:
    out = []
    for _, row in fits.iterrows():
        task = row.get("task") if "task" in fits else None
        heading = f"{title} on `{row['dataset']}`" + (f", task set `{task}`" if isinstance(task, str) else "")
        out += [f"## {heading}", "", *_fit_head(row, points)]
        p = pred[pred["dataset"] == row["dataset"]]
        if isinstance(task, str) and "task" in p:
            p = p[p["task"] == task]
        table = _predictions(p, q, row.get("level"))
        if len(table):
            out += [f"Predicted vs measured {note} of held-out points and targets "
                    f"({_pct(row.get('level'))} prediction intervals):", "", _table(table), ""]
    return out


def accuracy_table(runs: pd.DataFrame, downstream: pd.DataFrame) -> pd.DataFrame:
    """Top-1 accuracy (%) per task (rows; task-set averages last) of each best-LR (size, M) (columns).

    The best-LR run of a (dataset, size, M) is the rate with the lowest
    seed-averaged validation loss; its accuracy is averaged over seeds.
    """
    df = downstream_runs(runs, downstream)
    best = best_lr_points(runs)[["dataset", "size", "n_params", "token_multiplier", "lr"]]
    df = df.merge(best, on=["dataset", "size", "n_params", "token_multiplier", "lr"])
    several = df["dataset"].nunique() > 1
    df["column"] = [f"{d + ': ' if several else ''}{s} M={m:g}" for d, s, m in
                    zip(df["dataset"], df["size"], df["token_multiplier"])]
    df["row"] = np.where(df["kind"] == "average", "average: " + df["task"], df["task"])
    order = df.sort_values(["dataset", "n_params", "token_multiplier"])["column"].unique()
    table = df.pivot_table(index="row", columns="column", values="accuracy", aggfunc="mean")[order] * 100
    chance = df.groupby("row")["random_baseline_accuracy"].mean() * 100
    table.insert(0, "chance", chance)
    kinds = df.groupby("row")["kind"].first()
    table = table.loc[sorted(table.index, key=lambda r: (kinds[r] == "average", r))]
    return table.rename_axis(index="task", columns=None).reset_index()


def summary_markdown(title: str, study: str, t: Tables, figures_dir: str | None = None) -> str:
    """The study's summary: runs, each fitted law with intervals, predicted vs measured, per-task accuracy."""
    runs, pred = t.runs, t.predictions
    counts = runs["status"].value_counts().to_dict()
    out = [f"# {title}", "", f"Study `{study}`: {len(runs)} runs "
           f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
           f"{runs['flops'].sum():.3g} FLOPs of training, {runs['wall_s'].sum() / 60:.1f} CPU-minutes.", ""]
    if figures_dir is not None:
        out += ["Figures (PNG; SVG beside them): " + ", ".join(
            f"[{name}]({figures_dir}/{stem}.png)" for stem, name in FIGURES.items()) + ".", ""]
    out += _section("Over-training law", law_fits(t.fits, "overtraining"), law_predictions(pred, "overtraining"),
                    "loss", "best-LR points", "validation loss")
    out += _section("Downstream error law", law_fits(t.fits, "downstream"), law_predictions(pred, "downstream"),
                    "error", "runs", "average top-1 error (predicted from the predicted loss)")
    if t.downstream.empty:
        out += ["## Downstream tasks", "", "No downstream tasks in this study.", ""]
    else:
        out += ["## Downstream accuracy per task", "",
                "Top-1 accuracy (%) of the best-learning-rate run of each (size, M); `chance` is random guessing.",
                "", _table(accuracy_table(runs, t.downstream)), ""]
    out += _optimal_lr_section(runs, t.fits, pred)
    return "\n".join(out) + "\n"


def _optimal_lr_section(runs: pd.DataFrame, fits: pd.DataFrame, pred: pd.DataFrame) -> list[str]:
    lr_fits = law_fits(fits, "optimal_lr")
    best = lr_sweep_points(runs)
    if best.empty and lr_fits.empty:
        return ["## Optimal learning rate", "", "No learning-rate sweep in this study.", ""]
    out = _section("Optimal learning rate", lr_fits, law_predictions(pred, "optimal_lr"), "lr",
                   "best learning rates", "best learning rate")
    if lr_fits.empty:
        out += ["## Optimal learning rate", "", "No η*(N, D) law was fitted: the sweep does not separate N from D "
                "(it needs best rates at two or more token multipliers).", ""]
    if best.empty:
        return out
    sizes = runs.groupby(["dataset", "n_params"])["size"].first()
    out += ["Best learning rate per (size, M) of the sweep; `edge`: the best rate is the sweep's highest or lowest, "
            "so η* may lie beyond it.", "", _table(pd.DataFrame({
                "dataset": best["dataset"], "size": [sizes.get((d, n)) for d, n in zip(best["dataset"], best["n_params"])],
                "N": best["n_params"].astype("int64"), "M": best["token_multiplier"], "best lr": best["lr"],
                "rates tried": best["n_lrs"].astype("int64"), "loss": best["loss"], "edge": best["edge"]})), ""]
    return out


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
