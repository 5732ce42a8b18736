"""The report's figures: pure functions from a study's tables to matplotlib figures, and their files.

Each ``plot_*`` function takes tables (:mod:`scaling.report.tables`) and returns a
``Figure`` (nothing written); :func:`save_figure` writes one as PNG and SVG. The
set of figures never depends on the data, so a workflow can declare the files:
a figure whose data the study does not have (no downstream tasks, no
learning-rate sweep) is a placeholder panel that says so.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, NullFormatter, PercentFormatter  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scaling.fit.laws import LAWS  # noqa: E402
from scaling.fit.tables import best_lr_points  # noqa: E402
from scaling.io import atomic_path  # noqa: E402
from scaling.report import FIGURES  # noqa: E402
from scaling.report.tables import (Tables, downstream_runs, law_fits, law_predictions, lr_sweep_points,  # noqa: E402
                                  params)
from scaling.train.flops import flops_6nd, planned_tokens  # noqa: E402

FORMATS = ("png", "svg")
DPI = 150
PANEL = (6.0, 4.5)  # inches per panel: a PNG panel is 900 × 675 pixels
LOSS = "validation loss (nats/token)"
COMPUTE = "training compute C = 6ND (FLOPs)"
# one colour, marker and line style per token multiplier M: the Okabe–Ito colours (told apart with colour blindness
# and on a grey print), viridis past them; a point's fill is its role (filled: fit, open: held out)
M_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
M_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
M_LINES = ("-", "--", ":", "-.")
CURVE_MARGIN = 1.25  # a fitted curve at M runs this factor in N past the first and last point drawn at M, no further
DODGE = 6.0  # points between the markers of two token multipliers' sweeps at the same learning rate
STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8,
    "legend.title_fontsize": 8, "axes.grid": True, "axes.grid.which": "both", "grid.alpha": 0.3,
    "svg.hashsalt": "scaling-report",  # the same SVG for the same figure
}


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


@dataclass(frozen=True)
class MStyle:
    """How one token multiplier M is drawn: its colour, its marker and its curve's line style."""

    color: object
    marker: str
    ls: str


def m_styles(*frames: pd.DataFrame) -> dict[float, MStyle]:
    """One style per token multiplier M of ``frames`` (smallest M first), the same in every figure of a study."""
    ms = sorted(set().union(*(f["token_multiplier"].dropna().astype(float) for f in frames if len(f))))
    colors = M_COLORS if len(ms) <= len(M_COLORS) else plt.cm.viridis(np.linspace(0, 0.9, len(ms)))
    return {m: MStyle(colors[i], M_MARKERS[i % len(M_MARKERS)], M_LINES[i % len(M_LINES)])
            for i, m in enumerate(ms)}


def curve_span(n: pd.Series, points: int = 200) -> np.ndarray:
    """The N at which to draw a fitted curve: from the first to the last N drawn at its M, :data:`CURVE_MARGIN`
    beyond each, so a curve never runs far past what it is compared with (targets included)."""
    n = n.dropna().astype(float)
    return np.geomspace(n.min() / CURVE_MARGIN, n.max() * CURVE_MARGIN, points)


def _interval(ax, x, lo, hi, color, **kw) -> None:
    """Vertical bars from ``lo`` to ``hi`` at ``x`` (rows with a NaN bound are skipped)."""
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lo, hi))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.vlines(x[ok], lo[ok], hi[ok], colors=[color], lw=1.3, gid="interval", **kw)
        ax.scatter(np.r_[x[ok], x[ok]], np.r_[lo[ok], hi[ok]], marker="_", s=40, color=color, lw=1.3, **kw)


def _roles(ax, df: pd.DataFrame, x: str, y: str, style: MStyle) -> None:
    """Measured points in ``style``'s marker: filled in the fit set, open where held out."""
    for role, filled in (("fit", True), ("held_out", False)):
        sel = df[df["role"] == role]
        if len(sel):
            ax.scatter(sel[x], sel[y], marker=style.marker, s=40, zorder=3, color=style.color if filled else "none",
                       edgecolors=style.color, lw=1.2, gid=role)


def _predicted(ax, pred: pd.DataFrame, x: str, y: str, style: MStyle) -> None:
    """The predictions of ``pred``'s held-out points and targets at ``x``: the interval as a bar (``y``_lo/hi), the
    prediction as a tick across it (held out, whose measured point sits on the same bar) or a star (targets)."""
    shown = pred[pred["role"].isin(["held_out", "target"])]
    if f"{y}_lo" in shown:
        _interval(ax, shown[x], shown[f"{y}_lo"], shown[f"{y}_hi"], style.color)
    held, tgt = shown[shown["role"] == "held_out"], shown[shown["role"] == "target"]
    if len(held):
        ax.scatter(held[x], held[y], marker="_", s=120, lw=1.6, color=style.color, zorder=4, gid="prediction")
    if len(tgt):
        ax.scatter(tgt[x], tgt[y], marker="*", s=150, color=style.color, edgecolors="k", zorder=4, gid="target")


def _m_handles(styles: dict[float, MStyle], ms, line: bool = False) -> list[Line2D]:
    """Legend entries for the token multipliers ``ms``: colour and marker (and line style, under a curve)."""
    return [Line2D([], [], color=styles[m].color, marker=styles[m].marker, ls=styles[m].ls if line else "none",
                   label=f"M = {m:g}") for m in ms]


def _role_handles(level: float | None, target: bool, predicted: bool = True) -> list[Line2D]:
    """Legend entries for the point styles, in black."""
    k = dict(color="k", ls="none")
    out = [Line2D([], [], marker="o", label="filled: fit (measured)", **k),
           Line2D([], [], marker="o", mfc="none", label="open: held out (measured)", **k)]
    if predicted:
        lvl = f"{level:.0%} " if level is not None and np.isfinite(level) else ""
        out.append(Line2D([], [], marker="|", ms=12, label=f"prediction (tick) and its {lvl}interval", **k))
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


def _ticks_at(axis, values, most: int = 8, labelled: int = 4) -> None:
    """Tick a log axis at ``values`` (a sweep's rates) when there are few of them, instead of at powers of ten;
    label every one, or every other one past ``labelled`` (labels of close rates overlap on a narrow panel)."""
    if 1 < len(values) <= most:
        step = math.ceil(len(values) / labelled)
        axis.set_ticks(values, labels=[f"{v:.2g}" if i % step == 0 else "" for i, v in enumerate(values)])
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
def plot_loss_vs_compute(runs: pd.DataFrame, fits: pd.DataFrame, parameters: pd.DataFrame,
                         pred: pd.DataFrame) -> Figure:
    """Best-LR validation loss vs compute, one colour, marker and line style per M, with the fitted law per M.

    Measured points are filled (fit set) or open (held out). A held-out run's
    and a target's prediction interval is a vertical bar at its compute, the
    prediction a tick across it (held out: the measured point sits on the same
    bar) or a star (targets). The law at each M is drawn only over the N of the
    points at that M (:func:`curve_span`): up to a target, never to the axes' ends.
    Log-log axes: at fixed M the law is a power law in compute plus a constant.
    """
    ot_fits, ot = law_fits(fits, "overtraining"), law_predictions(pred, "overtraining")
    styles = m_styles(runs, pred)
    datasets = sorted(set(runs["dataset"]) | set(ot["dataset"]))
    fig, axes = _panels(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        p, fit = ot[ot["dataset"] == ds], ot_fits[ot_fits["dataset"] == ds]
        if p.empty:  # no fit for this dataset: the measured best-LR points only
            p = best_lr_points(runs[runs["dataset"] == ds]).assign(role="fit", measured_loss=lambda d: d["loss"])
        ms = sorted(set(p["token_multiplier"]))
        for m in ms:
            style, at_m = styles[m], p[p["token_multiplier"] == m]
            if len(fit):
                n = curve_span(at_m["n_params"])
                law = LAWS["overtraining"](n, m, **params(parameters, fit.iloc[0]))
                ax.plot(flops_6nd(n, planned_tokens(n, m)), law, color=style.color, ls=style.ls, lw=1.3,
                        label=f"M = {m:g}")
            _roles(ax, at_m, "flops", "measured_loss", style)
            _predicted(ax, at_m, "flops", "predicted_loss", style)
        ax.set(xscale="log", yscale="log", xlabel=COMPUTE, ylabel=LOSS,
               title=f"{ds}: over-training law" + ("" if len(fit) else " (not fitted)"))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))  # a loss axis spans little more than 1 decade
        _tidy_log_axes(ax, "x")
        ax.legend(handles=_m_handles(styles, ms, line=bool(len(fit)))
                  + _role_handles(_level(fit), bool((p["role"] == "target").any()), bool(len(fit))),
                  title="tokens per parameter M = D/N", loc="best")
    return fig


@_styled
def plot_downstream_vs_loss(runs: pd.DataFrame, downstream: pd.DataFrame, fits: pd.DataFrame,
                            parameters: pd.DataFrame, pred: pd.DataFrame) -> Figure:
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
    styles = m_styles(runs, pred)
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
            _average_panel(ax, ds, task_set, d[(d["kind"] == "average") & (d["task"] == task_set)], fit,
                           parameters, p, styles)
        _tasks_panel(row[-1], ds, d[d["kind"] == "task"])
        for ax in row[len(sets[ds]):-1]:
            ax.set_axis_off()
    return fig


def _task_sets(df: pd.DataFrame, fits: pd.DataFrame) -> list[str]:
    """The task sets of a dataset's average panels: the fitted ones, else those the table averages."""
    if len(fits) and "task" in fits:
        return sorted(fits["task"].dropna().unique())
    return sorted(df.loc[df["kind"] == "average", "task"].unique())


def _average_panel(ax, ds: str, task_set: str, runs: pd.DataFrame, fit: pd.DataFrame, parameters: pd.DataFrame,
                   pred: pd.DataFrame, styles: dict[float, MStyle]) -> None:
    """One task set's average error vs loss: runs, best-LR points, the law, predictions, chance.

    A prediction sits at the *predicted* loss, with both intervals (loss across, error up); a dotted line joins a
    held-out run's measured point to it, so the loss law's miss (across) and the error's (up) show as one step.
    """
    ax.scatter(runs["val_loss"], runs["error"], s=12, color="0.7", zorder=2, label="every run")
    xs = pd.concat([runs["val_loss"], pred["measured_loss"], pred["predicted_loss"]]).dropna()
    if len(fit) and len(xs):
        span = xs.max() - xs.min()
        L = np.linspace(xs.min() - 0.05 * span, xs.max() + 0.05 * span, 200)
        law = params(parameters, fit.iloc[0])
        ax.plot(L, LAWS["downstream"](L, **law), color="k", lw=1.3,
                label=f"Err(L) = {law['epsilon']:.3g} − {law['k']:.3g}·exp(−{law['gamma']:.3g}·L)")
    ms = sorted(pred["token_multiplier"].dropna().unique())
    for m in ms:
        style, at_m = styles[m], pred[pred["token_multiplier"] == m]
        _roles(ax, at_m, "measured_loss", "measured_error", style)
        _predicted(ax, at_m, "predicted_loss", "predicted_error", style)
        shown = at_m[at_m["role"].isin(["held_out", "target"])].dropna(subset=["predicted_loss_lo", "predicted_error"])
        if len(shown):
            ax.hlines(shown["predicted_error"], shown["predicted_loss_lo"], shown["predicted_loss_hi"],
                      colors=[style.color], lw=1.0, gid="loss_interval")
        for row in at_m[(at_m["role"] == "held_out") & at_m["measured_error"].notna()].itertuples():
            ax.plot([row.measured_loss, row.predicted_loss], [row.measured_error, row.predicted_error], ls=":",
                    lw=1.0, color=style.color, gid="miss")
    chance = runs["chance_error"].mean()
    if np.isfinite(chance):
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"random chance ({chance:.0%})")
    ax.set(xlabel=LOSS, ylabel=f"average top-1 error of {task_set}", title=f"{ds}: {task_set}, average error"
           + ("" if len(fit) else " (no law fitted)"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    # two legends in the corners error-vs-loss data leaves empty: low loss and high error, high loss and low error
    ax.add_artist(ax.legend(loc="lower right"))
    points = _m_handles(styles, ms) + _role_handles(_level(fit), (pred["role"] == "target").any(), bool(len(fit)))
    if (pred["role"] == "held_out").any():
        points.append(Line2D([], [], color="k", ls=":", label="held out: measured → predicted"))
    ax.legend(handles=points, loc="upper left")


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
    """Validation loss vs peak learning rate (log x) of every sweep: one colour per size, one line style and marker
    per M, a ring round each sweep's best rate; a placeholder when no (size, M) was trained at two or more rates.

    Only sweeps are drawn: a run at a single rate says nothing about the rate, and at the same rate and compute it
    would hide under another size's point (a small model at a larger M costs what a larger one does at a smaller
    M). Sweeps at different M are dodged sideways by :data:`DODGE` points each, so no marker covers another.
    Diverged runs are crosses along the top edge (they have no loss).
    """
    swept = runs.groupby(["dataset", "size", "token_multiplier"])["lr"].transform("nunique") >= 2
    sweeps, best = runs[swept], lr_sweep_points(runs)
    if sweeps.empty:
        return placeholder("Loss vs learning rate", "No learning-rate sweep in this study:\n"
                           "every (size, M) was trained at one learning rate.")
    datasets = sorted(sweeps["dataset"].unique())
    fig, axes = _panels(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        r, b = sweeps[sweeps["dataset"] == ds], best[best["dataset"] == ds]
        sizes = r.groupby("size")["n_params"].first().sort_values()
        colors = dict(zip(sizes.index, plt.cm.plasma(np.linspace(0, 0.85, len(sizes)))))
        ms = sorted(r["token_multiplier"].unique())
        line = {m: (M_LINES[i % len(M_LINES)], M_MARKERS[i % len(M_MARKERS)]) for i, m in enumerate(ms)}
        dodge = {m: (i - (len(ms) - 1) / 2) * DODGE for i, m in enumerate(ms)}
        for (size, m), g in r.groupby(["size", "token_multiplier"]):
            data = offset_copy(ax.transData, fig=fig, x=dodge[m], units="points")
            ok = g[g["status"] == "ok"].groupby("lr")["val_loss"].mean()
            ax.plot(ok.index, ok.values, ls=line[m][0], marker=line[m][1], ms=4.5, color=colors[size],
                    transform=data)
            at = b[(b["size"] == size) & (b["token_multiplier"] == m)]
            ax.scatter(at["lr"], at["loss"], s=110, facecolors="none", edgecolors=[colors[size]], lw=1.3, zorder=4,
                       linestyles="--" if (at["lr_edge"] != "").any() else "-", transform=data, gid="best_lr")
            bad = g[g["status"] != "ok"]
            if len(bad):
                ax.scatter(bad["lr"], np.full(len(bad), 0.97), marker="x", s=50, color=colors[size], clip_on=False,
                           transform=offset_copy(ax.get_xaxis_transform(), fig=fig, x=dodge[m], units="points"),
                           zorder=4, gid="diverged")
        ax.set(xscale="log", xlabel="peak learning rate", ylabel=LOSS, title=f"{ds}: loss vs learning rate")
        lo, hi = r["lr"].min(), r["lr"].max()
        ax.set_xlim(lo / (hi / lo) ** 0.08, hi * (hi / lo) ** 0.08)  # set here: dodged points do not autoscale
        _ticks_at(ax.xaxis, sorted(r["lr"].dropna().unique()))
        ok_loss = r.loc[r["status"] == "ok", "val_loss"]
        if len(ok_loss):
            lo, hi = ok_loss.min(), ok_loss.max()
            pad = 0.08 * (hi - lo) or 0.05
            ax.set_ylim(lo - pad, hi + 2.5 * pad)  # room for the diverged row at the top
        handles = [Line2D([], [], color=colors[s], lw=2.5, label=f"{s} (N = {n:,})") for s, n in sizes.items()]
        handles += [Line2D([], [], color="k", ls=line[m][0], marker=line[m][1], ms=4.5, label=f"M = {m:g}")
                    for m in ms]
        edge = " (dashed: at its edge)" if (b["lr_edge"] != "").any() else ""
        handles.append(Line2D([], [], color="k", marker="o", ms=10, mfc="none", ls="none",
                              label=f"best rate of the sweep{edge}"))
        if (r["status"] != "ok").any():
            handles.append(Line2D([], [], color="k", marker="x", ls="none", label="diverged"))
        single = runs[(runs["dataset"] == ds) & ~swept]
        if len(single):
            handles.append(Line2D([], [], ls="none", label=f"not drawn: {len(single)} run(s) at a single rate"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def relative_residuals(pred: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """``pred`` with ``residual`` = 100·(predicted/measured − 1), the relative error everywhere in this project, and
    ``lo``/``hi``: the values of it for which the measurement lies inside its interval (predicted/hi − 1 to
    predicted/lo − 1), so a point is covered exactly when its bar crosses its marker.

    ``quantity`` is ``loss`` or ``error``; rows without a measurement are dropped.
    """
    p = pred[pred[f"measured_{quantity}"].notna()]
    predicted = p[f"predicted_{quantity}"]
    out = p.assign(residual=100 * (predicted / p[f"measured_{quantity}"] - 1))
    for bound, end in (("lo", "hi"), ("hi", "lo")):
        col = f"predicted_{quantity}_{end}"  # an interval reaching 0 (an error) leaves that end unbounded: NaN
        out[bound] = 100 * (predicted / p[col].where(p[col] > 0) - 1) if col in p else np.nan
    return out


RESIDUAL_LAWS = {"overtraining": ("loss", "validation loss"), "downstream": ("error", "average top-1 error")}


@_styled
def plot_residuals(runs: pd.DataFrame, pred: pd.DataFrame) -> Figure:
    """Relative error (predicted/measured − 1, in %) vs compute for the loss law and the downstream law.

    One column per law (per task set for the downstream law), one row per
    dataset; colour per M, filled = fit, open = held out; a held-out point's
    prediction interval, on the same scale, is a bar.
    """
    styles = m_styles(runs, pred)
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
                _residual_panel(axes[i, j], ds, law, task, per[ds], styles)
            else:
                axes[i, j].set_axis_off()
    if not panels:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no measured point has a prediction", ha="center", transform=axes[0, 0].transAxes)
    return fig


def _residual_panel(ax, ds: str, law: str, task: str, pred: pd.DataFrame, styles: dict[float, MStyle]) -> None:
    q, what = RESIDUAL_LAWS[law]
    res = relative_residuals(pred, q)
    for m, at_m in res.groupby("token_multiplier"):
        held = at_m[at_m["role"].isin(["held_out", "test"])]
        _interval(ax, held["flops"], held["lo"], held["hi"], styles[m].color, alpha=0.5)
        _roles(ax, at_m, "flops", "residual", styles[m])
    ax.axhline(0, color="k", lw=1)
    title = (f"{ds}: over-training law" if law == "overtraining" else
             f"{ds}: downstream law{f' ({task})' if task else ''}, error from the predicted loss")
    ax.set(xscale="log", xlabel=COMPUTE, ylabel=f"predicted / measured − 1, {what} (%)", title=title)
    _tidy_log_axes(ax)
    ax.legend(handles=_m_handles(styles, sorted(res["token_multiplier"].unique())) + _role_handles(None, False)[:2]
              + [Line2D([], [], color="k", marker="|", ms=12, ls="none", label="prediction interval")], loc="best")


@_styled
def plot_optimal_lr(runs: pd.DataFrame, fits: pd.DataFrame, parameters: pd.DataFrame, pred: pd.DataFrame) -> Figure:
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
    styles = m_styles(runs, pred)
    datasets = sorted(best["dataset"].unique())
    fig, axes = _panels(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        b, fit, p = best[best["dataset"] == ds], lr_fits[lr_fits["dataset"] == ds], lr_pred[lr_pred["dataset"] == ds]
        tgt = p[p["role"] == "target"]
        for m in sorted(b["token_multiplier"].unique()):
            color, at_m = styles[m].color, b[b["token_multiplier"] == m]
            if len(fit):
                n = curve_span(pd.concat([at_m["n_params"], tgt.loc[tgt["token_multiplier"] == m, "n_params"]]), 100)
                law = LAWS["optimal_lr"](n, planned_tokens(n, m), **params(parameters, fit.iloc[0]))
                ax.plot(n, law, color=color, ls=styles[m].ls, lw=1.2, label=f"η*(N, D = {m:g}·N)")
            for edge, marker in (("", "o"), ("high", "^"), ("low", "v")):
                sel = at_m[at_m["lr_edge"] == edge]
                if len(sel):
                    ax.scatter(sel["n_params"], sel["lr"], marker=marker, s=45, zorder=3, lw=1.2, edgecolors=color,
                               color=color if edge == "" else "none", gid=f"best_lr{'_' + edge if edge else ''}")
        for m, t in p.groupby("token_multiplier"):
            _predicted(ax, t, "n_params", "predicted_lr", styles[m])
        ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="best peak learning rate",
               title=f"{ds}: best learning rate per (N, M)" + ("" if len(fit) else " (no η* law fitted)"))
        if fit.empty and tgt.empty:  # the axis spans the sweep: label its rates
            _ticks_at(ax.yaxis, sorted(runs.loc[runs["dataset"] == ds, "lr"].dropna().unique()))
        _tidy_log_axes(ax)
        handles, _ = ax.get_legend_handles_labels()
        if fit.empty:
            handles = [Line2D([], [], color=styles[m].color, marker="o", ls="none", label=f"M = {m:g}")
                       for m in sorted(b["token_multiplier"].unique())]
        k = dict(color="k", ls="none")
        if (b["lr_edge"] == "").any():
            handles.append(Line2D([], [], marker="o", label="best rate of the sweep", **k))
        if (b["lr_edge"] == "high").any():
            handles.append(Line2D([], [], marker="^", mfc="none", label="at the sweep's top: η* may be higher", **k))
        if (b["lr_edge"] == "low").any():
            handles.append(Line2D([], [], marker="v", mfc="none", label="at the sweep's bottom: η* may be lower", **k))
        if len(tgt):
            handles.append(Line2D([], [], marker="*", ms=11, label="target (predicted, with interval)", **k))
        ax.legend(handles=handles, loc="best")
    return fig


def figures(t: Tables) -> dict[str, Figure]:
    """Every figure of :data:`FIGURES`, drawn from ``t`` (placeholders where the study has no data for one)."""
    return {
        "loss_vs_compute": plot_loss_vs_compute(t.runs, t.fits, t.parameters, t.predictions),
        "downstream_vs_loss": plot_downstream_vs_loss(t.runs, t.downstream, t.fits, t.parameters, t.predictions),
        "loss_vs_lr": plot_loss_vs_lr(t.runs),
        "residuals": plot_residuals(t.runs, t.predictions),
        "optimal_lr": plot_optimal_lr(t.runs, t.fits, t.parameters, t.predictions),
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
