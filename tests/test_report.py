"""The report: figures (PNG and SVG) and the Markdown summary, made from a study's tables.

The tables are synthetic but made by the real fit code: runs with a known
over-training law, a known optimal learning rate and tasks whose error follows
the downstream law, fitted with scaling.fit.tables.fit_table and written with the
schema's write_table.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from scaling.report import FIGURES
from scaling.report import figures as F
from scaling.report import write as R
from scaling.report import tables as T
from scaling.report import summary as S
from scaling.fit.tables import fit_dict, fit_table, fits_table, parameters_table
from scaling.fit.laws import LAWS, downstream_error, optimal_lr, overtraining_loss
from scaling.store.schema import empty, write_table

REPO = Path(__file__).resolve().parents[1]
LOSS_LAW = {"E": 1.9, "a": 100.0, "b": -0.32, "c": 400.0}
LR_LAW = {"c": 3.0, "a": -0.5, "b": 0.1}
SIZES = {"s1": 10_000_000, "s2": 20_000_000, "s3": 40_000_000, "s4": 80_000_000, "s5": 160_000_000}
LRS = tuple(1e-3 * 2 ** (k / 2) for k in range(8))  # 0.001 … 0.011, steps of √2
TASKS = {  # task: (chance error, k); ε = chance and γ = 1.5 for all; winogrande stays near chance
    "arc_easy": (0.75, 12.0), "piqa": (0.5, 7.0), "hellaswag": (0.75, 6.0), "copa": (0.5, 8.0),
    "winogrande": (0.5, 1.0),
}
FIT_ON = [{"size": ["s1", "s2", "s3", "s4"], "token_multiplier": 20}, {"size": "s1", "token_multiplier": 80}]
TARGETS = [{"n_params": 1e9, "token_multiplier": 20}, {"size": "s5", "token_multiplier": 160}]
RESAMPLES = 40


def synthetic_runs(multipliers=(20, 80), lrs=LRS) -> pd.DataFrame:
    """LR sweeps of every size at each M (+ the smallest at M = 40, one rate); the largest diverges at the top rate."""
    rng = np.random.default_rng(0)
    cells = [(s, m, lr) for s in SIZES for m in multipliers for lr in lrs] + [("s1", 40, lrs[len(lrs) // 2])]
    rows = []
    for size, m, lr in cells:
        n = SIZES[size]
        best = optimal_lr(n, m * n, **LR_LAW)
        loss = overtraining_loss(n, m, **LOSS_LAW) + 0.03 * np.log(lr / best) ** 2 + rng.normal(0, 0.005)
        diverged = size == "s5" and lr == max(lrs) and len(lrs) > 1
        rows.append({
            "run_id": f"web/{size}/M{m}_lr{lr:g}_s0", "dataset": "web", "size": size, "token_multiplier": float(m),
            "lr": lr, "seed": 0, "n_params": n, "tokens": m * n, "flops": 6.0 * n * m * n,
            "val_loss": np.nan if diverged else float(loss), "initial_loss": 10.8,
            "status": "diverged" if diverged else "ok", "wall_s": 60.0,
        })
    return pd.DataFrame(rows)


def synthetic_downstream(runs: pd.DataFrame) -> pd.DataFrame:
    """Every ok run on every task (error from the downstream law, noisy) plus the set's average `core`."""
    rng = np.random.default_rng(1)
    rows = []
    for run in runs[runs["status"] == "ok"].itertuples():
        acc = []
        for task, (chance, k) in TASKS.items():
            err = float(np.clip(downstream_error(run.val_loss, chance, k, 1.5) + rng.normal(0, 0.01), 0, 1))
            acc.append((1 - err, 1 - chance))
            rows.append({"run_id": run.run_id, "task": task, "kind": "task", "accuracy": 1 - err,
                         "random_baseline_accuracy": 1 - chance, "n_examples": 500})
        rows.append({"run_id": run.run_id, "task": "core", "kind": "average",
                     "accuracy": np.mean([a for a, _ in acc]), "random_baseline_accuracy": np.mean([b for _, b in acc]),
                     "n_examples": 500 * len(TASKS)})
    return pd.DataFrame(rows)


def fitted_tables(runs: pd.DataFrame, downstream: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """fits, parameters and predictions as the fit stage writes them: over-training, downstream (task set `core`),
    optimal LR."""
    kw = dict(by=["dataset"], sizes=SIZES, resamples=RESAMPLES, seed=0)
    fits, preds = [], []
    ot, p = fit_table("overtraining", runs, fit_on=FIT_ON, targets=TARGETS, **kw)
    fits += [fit_dict(f) for f in ot]
    preds.append(p)
    if len(downstream):
        core = downstream[downstream["task"] == "core"][["run_id", "accuracy"]]
        with_error = runs.merge(core.assign(error=1 - core["accuracy"]), on="run_id", how="left")
        ds, p = fit_table("downstream", with_error, fit_on=FIT_ON, targets=TARGETS, **kw)
        fits += [{**fit_dict(f), "task": "core"} for f in ds if f.law == "downstream"]
        preds.append(p.assign(task="core"))
    if runs.groupby(["n_params", "token_multiplier"])["lr"].nunique().max() > 1 and \
            runs["token_multiplier"].nunique() > 1:
        lr, p = fit_table("optimal_lr", runs, targets=TARGETS[:1], by=["dataset"], sizes=SIZES)
        fits += [fit_dict(f) for f in lr]
        preds.append(p)
    return fits_table(fits), parameters_table(fits), pd.concat(preds, ignore_index=True)


def write_study(directory: Path, *, downstream: bool = True, **grid) -> T.Tables:
    """Write the five tables under ``directory`` with the schema's writer; return them as the report reads them."""
    runs = synthetic_runs(**grid)
    ds = synthetic_downstream(runs) if downstream else pd.DataFrame(
        {"run_id": [], "task": [], "kind": [], "accuracy": [], "random_baseline_accuracy": [], "n_examples": []})
    fits, parameters, pred = fitted_tables(runs, ds)
    for name, df in (("runs", runs), ("downstream", ds), ("fits", fits), ("parameters", parameters),
                     ("predictions", pred)):
        write_table(directory / f"{name}.parquet", name, df)
    return T.Tables.read(directory)


def law_params(t: T.Tables, law: str) -> dict[str, float]:
    """The fitted parameters of the study's first fit of ``law``, from the parameters table."""
    rows = t.parameters[t.parameters["law"] == law]
    return dict(zip(rows["parameter"], rows["value"]))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> T.Tables:
    return write_study(tmp_path_factory.mktemp("tables"))


@pytest.fixture(scope="module")
def no_downstream(tmp_path_factory) -> T.Tables:
    """One learning rate per (size, M) and no downstream tasks: the figures that need them are placeholders."""
    return write_study(tmp_path_factory.mktemp("bare"), downstream=False, lrs=(2e-3,))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def lines(ax, prefix: str):
    return [ln for ln in ax.get_lines() if ln.get_label().startswith(prefix)]


def gid(ax, name: str):
    return [c for c in ax.collections if c.get_gid() == name]


def assert_same_rows(got, expected) -> None:
    """The same rows of numbers, in any order."""
    np.testing.assert_allclose(np.array(sorted(map(tuple, got))), np.array(sorted(map(tuple, expected))))


def interval_bars(ax) -> list[tuple[float, float]]:
    """(bottom, top) of every interval bar of ``ax``."""
    return [(s[0][1], s[1][1]) for c in gid(ax, "interval") for s in c.get_segments()]


# -- the files ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["study", "no_downstream"])
def test_every_figure_is_written_as_a_real_png_and_svg(which, request, tmp_path):
    t = request.getfixturevalue(which)
    written = R.write_report("T", "s", t, tmp_path / "figures", tmp_path / "summary.md")
    assert set(written) == {tmp_path / "figures" / f"{n}.{fmt}" for n in F.FIGURES for fmt in F.FORMATS} | {
        tmp_path / "summary.md"}
    panels = {"loss_vs_compute": 1, "downstream_vs_loss": 2, "loss_vs_lr": 1, "residuals": 2, "optimal_lr": 1}
    for name in F.FIGURES:
        png, svg = tmp_path / "figures" / f"{name}.png", tmp_path / "figures" / f"{name}.svg"
        width, height = png_size(png)
        wide = panels[name] if which == "study" else {"residuals": 1}.get(name, 1)
        assert (width, height) == (F.DPI * F.PANEL[0] * wide, F.DPI * F.PANEL[1]), name
        assert svg.read_text().lstrip().startswith("<?xml") and "</svg>" in svg.read_text(), name
    assert not list((tmp_path / "figures").glob(".*"))  # no temporary files left behind


def test_the_report_draws_the_figures_of_its_list_in_order_each_with_a_caption(no_downstream):
    assert list(F.figures(no_downstream)) == list(FIGURES)  # the list the report rule declares its outputs from
    for name in FIGURES:
        assert (REPO / "workflow" / "report" / f"{name}.rst").read_text().strip(), name
    plt.close("all")


# -- the figures ----------------------------------------------------------------------------------------------------
def test_loss_vs_compute_draws_the_fitted_law_per_m_and_the_prediction_intervals(study):
    fig = F.plot_loss_vs_compute(study.runs, study.fits, study.parameters, study.predictions)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "FLOPs" in ax.get_xlabel() and "loss" in ax.get_ylabel() and ax.get_legend() is not None
    law = law_params(study, "overtraining")
    assert sorted(law) == sorted(LAWS["overtraining"].params)
    ms = sorted(study.predictions.loc[study.predictions["law"] == "overtraining", "token_multiplier"].unique())
    assert [ln.get_label() for ln in lines(ax, "M = ")] == [f"M = {m:g}" for m in ms]
    for m, line in zip(ms, lines(ax, "M = ")):
        flops, loss = line.get_data()
        n = np.sqrt(flops / (6 * m))  # C = 6·N·(M·N)
        assert np.allclose(loss, overtraining_loss(n, m, **law))
    # one interval bar per held-out run and target, spanning its prediction interval
    pred = study.predictions[(study.predictions["law"] == "overtraining") & (study.predictions["role"] != "fit")]
    assert_same_rows(interval_bars(ax), zip(pred["predicted_loss_lo"], pred["predicted_loss_hi"]))
    assert sum(len(c.get_offsets()) for c in gid(ax, "target")) == 2
    assert sum(len(c.get_offsets()) for c in gid(ax, "held_out")) == (pred["role"] == "held_out").sum()


def test_each_token_multiplier_has_its_own_colour_marker_and_line_style(study):
    styles = F.m_styles(study.runs, study.predictions)
    assert len(styles) == 4  # M = 20, 40, 80 and the target's 160
    for field in ("color", "marker", "ls"):
        assert len({str(getattr(st, field)) for st in styles.values()}) == len(styles), field
    ax = F.plot_loss_vs_compute(study.runs, study.fits, study.parameters, study.predictions).axes[0]
    curves = lines(ax, "M = ")
    assert len({(str(c.get_color()), c.get_linestyle()) for c in curves}) == len(curves) == 4


def test_a_fitted_curve_spans_the_points_at_its_m_and_ends_within_10x_of_them(study):
    """Each M's curve runs from its first to its last point (targets included), never a decade past them."""
    ax = F.plot_loss_vs_compute(study.runs, study.fits, study.parameters, study.predictions).axes[0]
    pred = study.predictions[study.predictions["law"] == "overtraining"]
    for line in lines(ax, "M = "):
        m = float(line.get_label().removeprefix("M = "))
        flops = pred.loc[pred["token_multiplier"] == m, "flops"]
        x = line.get_xdata()
        assert x.min() <= flops.min() and flops.max() <= x.max(), m  # covers every point and target at M
        assert x.min() >= flops.min() / 10 and x.max() <= 10 * flops.max(), m  # and stops near them
    ax = F.plot_optimal_lr(study.runs, study.fits, study.parameters, study.predictions).axes[0]
    best = T.lr_sweep_points(study.runs)
    lr_targets = study.predictions[study.predictions["law"] == "optimal_lr"]
    for m, line in zip((20, 80), lines(ax, "η*")):
        n = pd.concat([best.loc[best["token_multiplier"] == m, "n_params"],
                       lr_targets.loc[lr_targets["token_multiplier"] == m, "n_params"]])
        x = line.get_xdata()
        assert x.min() <= n.min() and n.max() <= x.max() <= 10 * n.max() and x.min() >= n.min() / 10, m
    plt.close("all")


def test_held_out_points_carry_their_interval_and_prediction_at_their_own_compute(study):
    ax = F.plot_loss_vs_compute(study.runs, study.fits, study.parameters, study.predictions).axes[0]
    pred = study.predictions[(study.predictions["law"] == "overtraining") & (study.predictions["role"] != "fit")]
    bars = [(s[0][0], s[0][1], s[1][1]) for c in gid(ax, "interval") for s in c.get_segments()]
    assert_same_rows(bars, zip(pred["flops"], pred["predicted_loss_lo"], pred["predicted_loss_hi"]))
    held = pred[pred["role"] == "held_out"]
    assert_same_rows(np.concatenate([c.get_offsets() for c in gid(ax, "prediction")]),
                     zip(held["flops"], held["predicted_loss"]))  # the tick across the bar
    assert_same_rows(np.concatenate([c.get_offsets() for c in gid(ax, "held_out")]),
                     zip(held["flops"], held["measured_loss"]))  # the measured point on the same vertical
    plt.close("all")


def test_downstream_predictions_show_both_intervals_and_join_the_measured_point(study):
    fig = F.plot_downstream_vs_loss(study.runs, study.downstream, study.fits, study.parameters, study.predictions)
    avg = fig.axes[0]
    pred = study.predictions[(study.predictions["law"] == "downstream") & (study.predictions["role"] != "fit")]
    across = [(s[0][1], s[0][0], s[1][0]) for c in gid(avg, "loss_interval") for s in c.get_segments()]
    assert_same_rows(across, zip(pred["predicted_error"], pred["predicted_loss_lo"], pred["predicted_loss_hi"]))
    held = pred[pred["role"] == "held_out"]
    joins = [np.r_[ln.get_xdata(), ln.get_ydata()] for ln in avg.get_lines() if ln.get_gid() == "miss"]
    assert_same_rows(joins, zip(held["measured_loss"], held["predicted_loss"], held["measured_error"],
                                held["predicted_error"]))
    plt.close(fig)


def test_downstream_figure_shows_the_law_the_points_chance_and_every_task(study):
    fig = F.plot_downstream_vs_loss(study.runs, study.downstream, study.fits, study.parameters, study.predictions)
    avg, tasks = fig.axes[:2]
    (curve,) = lines(avg, "Err(L)")
    L, err = curve.get_data()
    assert np.allclose(err, downstream_error(L, **law_params(study, "downstream")))
    chance = 1 - np.mean([1 - c for c, _ in TASKS.values()])
    (dashed,) = lines(avg, "random chance")
    assert dashed.get_ydata()[0] == pytest.approx(chance) and dashed.get_linestyle() == "--"
    for ax in (avg, tasks):
        assert "loss" in ax.get_xlabel() and "error" in ax.get_ylabel() and ax.get_legend() is not None
    legend = [t.get_text() for t in tasks.get_legend().get_texts()]
    assert legend[-1] == "winogrande" and legend == F.task_order(T.downstream_runs(study.runs, study.downstream)
                                                                    .query("kind == 'task'"))  # easiest → hardest
    assert sorted(legend) == sorted(TASKS)
    pred = study.predictions[(study.predictions["law"] == "downstream") & (study.predictions["role"] != "fit")]
    assert_same_rows(interval_bars(avg), zip(pred["predicted_error_lo"], pred["predicted_error_hi"]))


def test_without_downstream_rows_the_downstream_figure_is_a_placeholder(no_downstream):
    t = no_downstream
    fig = F.plot_downstream_vs_loss(t.runs, t.downstream, t.fits, t.parameters, t.predictions)
    assert F.is_placeholder(fig)
    assert "No downstream tasks" in " ".join(txt.get_text() for txt in fig.axes[0].texts)
    assert len(F.plot_residuals(t.runs, t.predictions).axes) == 1  # the loss law only


def test_loss_vs_lr_marks_diverged_runs_and_labels_the_sizes(study):
    fig = F.plot_loss_vs_lr(study.runs)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    diverged = np.concatenate([c.get_offsets() for c in gid(ax, "diverged")])
    bad = study.runs[study.runs["status"] != "ok"]
    assert sorted(diverged[:, 0]) == sorted(bad["lr"]) and len(bad) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:len(SIZES)] == [f"{s} (N = {n:,})" for s, n in SIZES.items()] and "diverged" in labels
    ok = study.runs[study.runs["status"] == "ok"]["val_loss"]
    lo, hi = ax.get_ylim()
    assert lo < ok.min() and ok.max() < hi  # every loss visible; diverged runs do not squash the curves


def default_like_runs(m40_sweep: bool) -> pd.DataFrame:
    """A default-like grid: four sizes swept over three rates at M = 20, the smallest also at M = 40 and
    M = 80 and a larger shape at M = 20 at one rate each. d32 at M = 40 costs what d40 costs at M = 20 and here
    reaches exactly its loss; with ``m40_sweep`` d32 at M = 40 is swept too, on d40's losses at every rate."""
    sizes = {"d32": 35_712, "d40": 52_320, "d48": 72_000, "d64": 120_576, "d64L3": 170_560}
    base = {"d32": 1.76, "d40": 1.60, "d48": 1.51, "d64": 1.42, "d64L3": 1.36}
    lrs = (0.01, 0.02, 0.04)
    shape = {0.01: 0.0, 0.02: 0.02, 0.04: 0.4}
    cells = [(s, 20.0, lr, base[s] + shape[lr]) for s in ("d32", "d40", "d48", "d64") for lr in lrs]
    cells += [("d32", 40.0, lr, base["d40"] + shape[lr]) for lr in (lrs if m40_sweep else (0.02,))]
    cells += [("d32", 80.0, 0.02, 1.53), ("d64L3", 20.0, 0.02, 1.36)]
    return pd.DataFrame([{"run_id": f"bible/{s}/M{m:g}_lr{lr:g}_s0", "dataset": "bible", "size": s,
                          "token_multiplier": m, "lr": lr, "seed": 0, "n_params": sizes[s], "tokens": m * sizes[s],
                          "flops": 6.0 * m * sizes[s] ** 2, "val_loss": loss, "status": "ok", "wall_s": 10.0}
                         for s, m, lr, loss in cells])


@pytest.mark.parametrize("m40_sweep", [False, True])
def test_loss_vs_lr_hides_no_marker_under_another(m40_sweep):
    runs = default_like_runs(m40_sweep)
    fig = F.plot_loss_vs_lr(runs)
    ax = fig.axes[0]
    fig.canvas.draw()
    drawn = [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "")]
    points = np.concatenate([ln.get_transform().transform(ln.get_xydata()) for ln in drawn])
    swept = runs.groupby(["size", "token_multiplier"])["lr"].transform("nunique") >= 2
    assert len(points) == swept.sum()  # every run of a sweep, and no single-rate run
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(len(points), 1)]
    size_px = max(ln.get_markersize() for ln in drawn) * fig.dpi / 72
    assert gaps.min() >= size_px  # no two markers overlap, let alone coincide
    # a ring round each sweep's best rate, on its point
    centres = np.concatenate([c.get_offset_transform().transform(c.get_offsets()) for c in gid(ax, "best_lr")])
    assert len(centres) == runs[swept].groupby(["size", "token_multiplier"]).ngroups
    assert all(np.linalg.norm(points - c, axis=1).min() < 1e-6 for c in centres)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"not drawn: {(~swept).sum()} run(s) at a single rate" in labels
    plt.close(fig)


def test_residuals_are_predicted_over_measured_minus_one_in_percent(study):
    fig = F.plot_residuals(study.runs, study.predictions)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and "%" in ax.get_ylabel() and ax.get_legend() is not None
        assert any(np.allclose(ln.get_ydata(), 0) for ln in ax.get_lines())  # the zero line
    p = study.predictions[(study.predictions["law"] == "overtraining") & (study.predictions["role"] == "held_out")]
    drawn = np.concatenate([c.get_offsets() for c in gid(fig.axes[0], "held_out")])
    expected = np.c_[p["flops"], 100 * (p["predicted_loss"] / p["measured_loss"] - 1)]
    assert_same_rows(drawn, expected)
    assert np.allclose(expected[:, 1], 100 * p["rel_error"])  # the same relative error as the tables
    bars = interval_bars(fig.axes[0])  # a held-out point is covered exactly when its bar crosses it
    crossed = [any(lo <= y <= hi for lo, hi in bars) for y in expected[:, 1]]
    assert crossed == p["covered"].tolist()


def test_optimal_lr_plots_the_best_rates_the_law_and_the_sweep_edges(study):
    fig = F.plot_optimal_lr(study.runs, study.fits, study.parameters, study.predictions)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log") and ax.get_legend() is not None
    law = law_params(study, "optimal_lr")
    for m, line in zip((20, 80), lines(ax, "η*")):
        n, lr = line.get_data()
        assert np.allclose(lr, optimal_lr(n, m * n, **law))
    best = T.lr_sweep_points(study.runs)
    assert len(best) == 2 * len(SIZES)  # the single-rate point (s1, M = 40) is not a sweep
    points = sum(len(c.get_offsets()) for c in ax.collections if str(c.get_gid()).startswith("best_lr"))
    assert points == len(best)
    # s5 diverged at the top rate, so its best of the rest may sit on the top edge; the figure marks what the fit sees
    assert sum(len(c.get_offsets()) for c in gid(ax, "best_lr_high")) == (best["lr_edge"] == "high").sum()


def test_a_cut_sweep_is_marked_on_its_edge():
    runs = synthetic_runs(lrs=LRS[:2])  # both rates below every optimum
    best = T.lr_sweep_points(runs)
    assert (best["lr_edge"] == "high").all()
    fig = F.plot_optimal_lr(runs, *(empty(t).to_pandas() for t in ("fits", "parameters", "predictions")))
    assert sum(len(c.get_offsets()) for c in gid(fig.axes[0], "best_lr_high")) == len(best)
    assert "no η* law fitted" in fig.axes[0].get_title()


def test_without_a_sweep_the_learning_rate_figures_are_placeholders(no_downstream):
    t = no_downstream
    assert F.is_placeholder(F.plot_optimal_lr(t.runs, t.fits, t.parameters, t.predictions))
    assert F.is_placeholder(F.plot_loss_vs_lr(t.runs))


# -- the summary ----------------------------------------------------------------------------------------------------
def test_the_summary_of_a_ladder_states_its_compute_and_that_from_scratch(study):
    runs = study.runs.assign(trunk="t", flops_spent=study.runs["flops"] * 0.6)
    md = S.summary_markdown("T", "s", T.Tables(runs, *(getattr(study, f) for f in
                                                       ("downstream", "fits", "parameters", "predictions"))))
    scratch = study.runs["flops"].sum()
    assert f"{0.6 * scratch:.3g} FLOPs of training on a ladder, 0.600× the {scratch:.3g} of training every run" in md
    assert f"`s`: {len(runs)} runs" in md and "on a ladder" not in S.summary_markdown("T", "s", study)


def test_the_summary_counts_each_trunks_time_once(study):
    runs = study.runs.assign(wall_s=60.0, trunk=None, trunk_wall_s=None)
    assert f"{len(runs):.1f} CPU-minutes" in S.summary_markdown("T", "s", T.Tables(runs, *(getattr(study, f) for f in
                                                                ("downstream", "fits", "parameters", "predictions"))))
    # two trunks: each run's own job (its cooldown), then each trunk once, by the run branching last on it
    runs = runs.assign(trunk=["a" if i % 2 else "b" for i in range(len(runs))],
                       trunk_wall_s=[60.0 * (i + 1) for i in range(len(runs))])
    last = runs.groupby("trunk")["trunk_wall_s"].max().sum()
    assert S.cpu_minutes(runs) == pytest.approx(len(runs) + last / 60)
    assert last == 60.0 * (2 * len(runs) - 1)  # the last two runs' trunk times, not every run's


def test_summary_has_every_law_its_parameters_and_the_held_out_numbers(study):
    md = S.summary_markdown("A title", "web-study", study, "figures")
    n_bad = (study.runs["status"] == "diverged").sum()
    assert md.startswith("# A title") and n_bad
    assert f"`web-study`: {len(study.runs)} runs ({n_bad} diverged, {len(study.runs) - n_bad} ok)" in md
    for law in ("overtraining", "downstream", "optimal_lr"):
        assert study.fits.loc[study.fits["law"] == law, "formula"].iloc[0] in md
        rows = study.parameters[study.parameters["law"] == law]
        assert list(rows["parameter"]) == list(LAWS[law].params)
        for p in rows.itertuples():
            assert f"| {p.parameter} | {p.value:.4g} | {p.stderr:.4g} | [{p.lo:.4g}, {p.hi:.4g}] |" in md, (law, p)
    b = law_params(study, "overtraining")["b"]
    assert f"η = −b/2 = {-b / 2:.4f}" in md
    pred = study.predictions
    held = pred[(pred["law"] == "overtraining") & (pred["role"] == "held_out")].iloc[0]
    assert (f"| {held['predicted_loss']:.4g} | [{held['predicted_loss_lo']:.4g}, {held['predicted_loss_hi']:.4g}] "
            f"| {held['measured_loss']:.4g} | {100 * held['rel_error']:.4g} | "
            f"{'yes' if held['covered'] else 'no'} |") in md
    ds = pred[(pred["law"] == "downstream") & (pred["role"] == "held_out")].iloc[0]
    assert (f"| {ds['predicted_error']:.4g} | [{ds['predicted_error_lo']:.4g}, {ds['predicted_error_hi']:.4g}] "
            f"| {ds['measured_error']:.4g} | {100 * ds['error_rel_error']:.4g} |") in md
    target = pred[(pred["law"] == "downstream") & (pred["role"] == "target")].iloc[0]
    assert f"| {target['predicted_error']:.4g} | [{target['predicted_error_lo']:.4g}" in md
    assert "task set `core`" in md and "(figures/loss_vs_compute.png)" in md


def result(md: str) -> str:
    """The summary's opening section, the result in words."""
    assert md.index("## Result") < md.index("## Over-training law")
    return md[md.index("## Result"):md.index("## Over-training law")]


def with_parameters(t: T.Tables, law: str, **changes) -> T.Tables:
    """``t`` with some of ``law``'s parameter rows changed: ``name=(value, stderr)``."""
    par = t.parameters.copy()
    for name, (value, stderr) in changes.items():
        at = (par["law"] == law) & (par["parameter"] == name)
        par.loc[at, ["value", "stderr"]] = value, stderr
    return T.Tables(t.runs, t.downstream, t.fits, par, t.predictions)


def test_the_result_says_whether_each_parameter_is_identified(study):
    law = law_params(study, "overtraining")
    tight = {k: (v, 0.01 * abs(v)) for k, v in law.items()}
    text = result(S.summary_markdown("T", "s", with_parameters(study, "overtraining", **tight)))
    assert "Loss law on `web`" in text and "Every parameter is identified" in text
    loose = {**tight, "a": (law["a"], 500 * abs(law["a"])), "c": (law["c"], 0.6 * abs(law["c"]))}
    text = result(S.summary_markdown("T", "s", with_parameters(study, "overtraining", **loose)))
    assert "Every parameter is identified" not in text.split("**Downstream")[0]
    assert "Identified (standard error below 50% of its value): E, b." in text
    assert "**Not identified**: a (standard error 50000% of its value), c (standard error 60% of its value)." in text
    assert f"a = {law['a']:.4g} ± {500 * abs(law['a']):.2g}" in text


def test_the_result_gives_the_held_out_run_of_largest_compute_against_its_interval(study):
    text = result(S.summary_markdown("T", "s", study))
    pred = study.predictions
    held = pred[(pred["law"] == "overtraining") & (pred["role"] == "held_out")]
    h = held.loc[held["flops"].idxmax()]
    assert len(held) > 1
    assert (f"Held-out run of largest compute {h['size']} (N = {h['n_params']:,}, M = {h['token_multiplier']:g}, "
            f"{h['compute_ratio']:.2g}× the fit set's largest compute): predicted loss {h['predicted_loss']:.4g} "
            f"(95% interval [{h['predicted_loss_lo']:.4g}, {h['predicted_loss_hi']:.4g}]), measured "
            f"{h['measured_loss']:.4g}, relative error {100 * h['rel_error']:+.3g}%, "
            f"**{'inside' if h['covered'] else 'outside'}** its interval.") in text
    assert f"Over all {len(held)} held-out runs: {int(held['covered'].sum())} of {len(held)} inside" in text
    flipped = study.predictions.assign(covered=lambda d: d["covered"].map(lambda c: c if c is None else not c))
    other = result(S.summary_markdown("T", "s", T.Tables(study.runs, study.downstream, study.fits,
                                                           study.parameters, flipped)))
    assert f"**{'outside' if h['covered'] else 'inside'}** its interval." in other.split("**Downstream")[0]
    smaller = held.loc[held["flops"].idxmin()]  # the only held-out run: not called the largest, as it may not be
    alone = study.predictions.drop(index=held.index.drop(smaller.name))
    text = result(S.summary_markdown("T", "s", T.Tables(study.runs, study.downstream, study.fits, study.parameters,
                                                          alone)))
    assert f"Held-out run {smaller['size']} (N = {smaller['n_params']:,}," in text.split("**Downstream")[0]


def test_the_result_compares_the_downstream_ceiling_with_chance(study):
    chance = 1 - np.mean([1 - c for c, _ in TASKS.values()])
    below = result(S.summary_markdown("T", "s", with_parameters(study, "downstream", epsilon=(chance - 0.2, 0.01))))
    assert f"Ceiling ε = {chance - 0.2:.3g} is **below** the error of chance ({chance:.3g})" in below
    above = result(S.summary_markdown("T", "s", with_parameters(study, "downstream", epsilon=(chance + 0.01, 0.01))))
    assert f"Ceiling ε = {chance + 0.01:.3g} is at or above the error of chance ({chance:.3g})" in above


def test_the_result_says_in_words_which_downstream_law_was_not_fitted_and_what_to_do(study):
    fits, pred = study.fits, study.predictions
    unfitted = T.Tables(study.runs, study.downstream, fits[fits["law"] != "downstream"], study.parameters,
                        pred[pred["law"] != "downstream"])  # as the fit stage writes a law it could not fit
    text = result(S.summary_markdown("T", "s", unfitted))
    core = study.downstream[study.downstream["task"] == "core"]
    assert ("**The downstream law was not fitted** on `web`: its fit to the runs' errors failed (fit/downstream.json "
            f"and logs/fit.log say why); the runs' accuracy is {core['accuracy'].min():.0%} to "
            f"{core['accuracy'].max():.0%} on `core` (guessing: {core['random_baseline_accuracy'].mean():.0%}). "
            "The error law needs errors that fall with loss: score the runs on more examples (downstream.examples) "
            "or on tasks these models beat chance on, or train larger models.") in text
    assert "Loss law on `web`" in text and "not fitted" not in result(S.summary_markdown("T", "s", study))
    unscored = T.Tables(study.runs, study.downstream.assign(run_id="tokens/another-dataset"), unfitted.fits,
                        study.parameters, unfitted.predictions)  # web's runs were scored on no task: nothing failed
    assert "not fitted" not in result(S.summary_markdown("T", "s", unscored))


def test_the_result_states_the_diagnostics_in_words(study):
    text = result(S.summary_markdown("T", "s", study))
    fitted = study.predictions[(study.predictions["law"] == "overtraining") & (study.predictions["role"] == "fit")]
    assert f"fits its {len(fitted)} points within {100 * fitted['rel_error'].abs().max():.2g}%" in text
    assert "with 5 points for 4 parameters it nearly interpolates them" in text
    assert "**not calibrated**" in text and "lies above a measured loss" not in text
    best = T.lr_sweep_points(study.runs)
    assert (best["lr_edge"] == "").all() and f"Every learning-rate sweep ({len(best)}) has its best rate inside" in text
    cut = study.runs[study.runs["lr"].isin(LRS[:2])]  # every sweep ends below its optimum
    text = result(S.summary_markdown("T", "s", T.Tables(cut, study.downstream, study.fits, study.parameters,
                                                         study.predictions)))
    assert f"for {2 * len(SIZES)} of {2 * len(SIZES)} sweeps: s1 at M = 20 (highest rate tried)" in text
    floor = study.predictions.loc[study.predictions["law"] == "overtraining", "measured_loss"].min() + 0.01
    text = result(S.summary_markdown("T", "s", with_parameters(study, "overtraining", E=(floor, 0.001))))
    assert f"Its floor E = {floor:.4g} lies above a measured loss" in text


def test_the_accuracy_table_has_a_row_per_task_and_a_column_per_best_lr_point(study):
    table = S.accuracy_table(study.runs, study.downstream)
    assert list(table["task"]) == sorted(TASKS) + ["average: core"]
    assert list(table.columns[:3]) == ["task", "chance", "s1 M=20"] and len(table.columns) == 2 + 2 * len(SIZES) + 1
    assert table.set_index("task").loc["piqa", "chance"] == pytest.approx(50.0)
    # the s3 M = 20 column is the accuracy of its best-LR run
    runs = study.runs[(study.runs["size"] == "s3") & (study.runs["token_multiplier"] == 20)]
    best = runs.loc[runs["val_loss"].idxmin(), "run_id"]
    acc = study.downstream.set_index(["run_id", "task"]).loc[(best, "copa"), "accuracy"]
    assert table.set_index("task").loc["copa", "s3 M=20"] == pytest.approx(100 * acc)
    md = S.summary_markdown("T", "s", study)
    assert "| task | chance | s1 M=20 |" in md


def test_summary_without_downstream_or_sweep_says_so(no_downstream):
    md = S.summary_markdown("T", "s", no_downstream)
    assert "No downstream tasks in this study." in md and "No learning-rate sweep in this study." in md
    assert "Downstream error law" not in md and "Over-training law on `web`" in md


def test_a_warning_when_the_fit_stage_says_a_parameter_ended_on_its_bound(study):
    fits = study.fits.assign(at_bound=np.where(study.fits["law"] == "overtraining", '["E", "c"]', None))
    md = S.summary_markdown("T", "s", T.Tables(study.runs, study.downstream, fits, study.parameters,
                                                study.predictions))
    assert md.count("**Warning:**") == 1 and "**Warning:** E, c ended on the bound" in md


def two_datasets(t: T.Tables) -> T.Tables:
    """The study twice: as dataset `web` and as dataset `books` (runs renamed)."""
    def twice(df, run_id=False):
        other = df.assign(dataset="books") if "dataset" in df else df.copy()
        if run_id:
            other["run_id"] = "books/" + other["run_id"]
        return pd.concat([df, other], ignore_index=True)
    return T.Tables(twice(t.runs, True), twice(t.downstream, True), twice(t.fits), twice(t.parameters),
                    twice(t.predictions))


def test_every_dataset_gets_its_own_panels_and_sections(study):
    t = two_datasets(study)
    figs = F.figures(t)
    # loss vs compute, loss vs lr, optimal lr: a panel per dataset; downstream and residuals: a row per dataset
    assert {name: len([ax for ax in fig.axes if ax.axison]) for name, fig in figs.items()} == {
        "loss_vs_compute": 2, "downstream_vs_loss": 4, "loss_vs_lr": 2, "residuals": 4, "optimal_lr": 2}
    titles = [ax.get_title() for ax in figs["residuals"].axes]
    assert titles[0].startswith("books: over-training") and titles[-1].startswith("web: downstream law (core)")
    md = S.summary_markdown("T", "s", t)
    for ds in ("web", "books"):
        assert f"## Over-training law on `{ds}`" in md and f"## Downstream error law on `{ds}`" in md
    assert "| task | chance | books: s1 M=20 |" in md
    for fig in figs.values():
        plt.close(fig)


# -- the command --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_scaling_report_reads_a_tables_folder(tmp_path):
    write_study(tmp_path / "tables", downstream=False, lrs=(2e-3,))
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "report", "--title", "T", "--study", "s",
                           "--tables", str(tmp_path / "tables"), "--figures", str(tmp_path / "out/figures"),
                           "--summary", str(tmp_path / "out/summary.md")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "(figures/residuals.png)" in (tmp_path / "out/summary.md").read_text()
    assert len(list((tmp_path / "out/figures").iterdir())) == 2 * len(F.FIGURES)
    (tmp_path / "tables/fits.parquet").unlink()
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "report", "--title", "T", "--study", "s",
                           "--tables", str(tmp_path / "tables"), "--figures", str(tmp_path / "f"),
                           "--summary", str(tmp_path / "s.md")], capture_output=True, text=True)
    assert proc.returncode != 0 and "fits.parquet" in proc.stderr
