"""A study's grid at a glance: which runs are done, running, failed, diverged or not started, and its progress.

The planned grid comes from the study config (loaded and checked by
:func:`scaling.study.config.load`, as the Snakefile does); each run's state from its
files under ``results/<study>/``:

- ``done`` / ``diverged``: ``runs/<run_id>/metrics.json`` exists (it is written
  last) with that status;
- ``stale``: it exists, but the spec it was trained on (its ``spec_digest``,
  :func:`scaling.io.spec_digest`) is not the study's now: a change to the
  study (e.g. of ``training``) retrains it, as ``snakemake -n`` shows. On a
  ladder also when a trunk segment up to its branch point is stale (its record
  keeps its spec's digest too) or not finished (a new M re-plans the trunk);
- ``running``: no metrics.json yet, and the job's log
  ``logs/train/<run_id>.log`` was written to in the last ``stale_after``
  seconds (training logs every few seconds) without a Python traceback;
- ``failed``: a log but no metrics.json otherwise, or a metrics.json that
  cannot be read;
- ``not_started``: neither.

On a ladder a run whose own job has not started takes the state of its trunk's
segments up to its branch point (:func:`segment_states`): ``running`` while one
trains, ``failed`` when one failed (its log ``logs/trunk/<trunk>/step<end>.log``
read as a run's; a segment is finished when its record
``trunks/<trunk>/step<end>.json`` exists).

Tokens and compute done are those of done runs, the part of each diverged run
trained before it stopped, and the part a running or failed run's log last
reported (``step k/K``: k/K of its planned tokens); compute left is the rest of
the planned compute. A run's planned compute is C = 6·N·D, or on a ladder its
share of its trunk and its cooldown (:func:`scaling.train.ladder.spent_steps`),
and its compute done counts its shares of the trunk's segments done.

:func:`progress` turns this into the study's progress (:func:`progress_text`,
``scaling status --watch``): runs finished, running and left; tokens and compute
done; and an ETA. The ETA divides the compute left by the throughput measured on
this study: the FLOP/s of one job (finished jobs' compute over their wall time, which
counts start-up and the final evaluation: each run's job, and on a ladder each trunk
segment's once; before any job finished, the tokens/s in the running jobs' logs) times
the jobs training side by side now (at least one).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd

from scaling.io import spec_digest
from scaling.study import runs as S
from scaling.train import ladder
from scaling.train.flops import flops_6nd

STATES = ("done", "running", "failed", "diverged", "stale", "not_started")
FINISHED = ("done", "diverged")
# the training log's progress line (scaling.train.loop.log_progress) and its resume line: "step 40/1232 … 2,345 tok/s"
STEP = re.compile(rb"step (\d+)/(\d+)(?:.*? ([\d,]+) tok/s)?")


def job_state(finished: Path, log: Path, now: float, stale_after: float) -> tuple[str, dict]:
    """A job's state and what its files say: the JSON file it writes last (a run's ``metrics.json``, a trunk
    segment's record) when it finished, else the last ``step``, ``steps`` and ``tok_s`` its log reported (absent
    until it reports one)."""
    if finished.exists():
        try:
            metrics = json.loads(finished.read_text())
        except (OSError, ValueError):
            return "failed", {}
        return ("done" if metrics.get("status") == "ok" else "diverged"), metrics
    if not log.exists():
        return "not_started", {}
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 8192))
        tail = f.read()
    crashed = b"Traceback (most recent call last)" in tail
    fresh = now - log.stat().st_mtime < stale_after
    reported = {}
    if lines := STEP.findall(tail):
        step, steps, tok_s = lines[-1]
        reported = {"step": int(step), "steps": int(steps)}
        if tok_s:
            reported["tok_s"] = float(tok_s.replace(b",", b""))
    return ("running" if fresh and not crashed else "failed"), reported


def segment_states(specs: S.Specs, results: Path, now: float, stale_after: float) -> dict[str, list[dict]]:
    """Each trunk's segments, in order: the segment's end step, its steps, how many of the trunk's runs share it
    (branch at or after its end), its state (:func:`job_state` of its record ``trunks/<trunk>/step<end>.json`` and
    its log ``logs/trunk/<trunk>/step<end>.log``; ``stale`` when it finished on another spec or after a segment that
    is not finished on its own), its steps done, its job's wall time once finished (else 0) and
    the tokens/s its log reports."""
    out, planned = {}, S.trunk_segments(specs.config, specs.plans)
    for trunk, (_, plan) in specs.plans.items():
        out[trunk], before = [], True  # whether the segments before are finished, on their specs
        for (first, end), shared in zip(plan.segments, ladder.sharers(plan.branch_steps)):
            key = f"{trunk}/step{end}"
            state, m = job_state(results / "trunks" / f"{key}.json", results / "logs" / "trunk" / f"{key}.log",
                                 now, stale_after)
            if state in FINISHED and (not before or m.get("spec_digest") not in (None, spec_digest(planned[key]))):
                state, m = "stale", {}  # trained on another spec, or after a segment that trains again: so does it
            before = before and state in FINISHED
            finished = state in FINISHED
            out[trunk].append({"end": end, "steps": end - first, "state": state,
                               "shared": shared,
                               "done": end - first if finished else min(end - first, max(0, m.get("step", 0) - first)),
                               "wall_s": m.get("wall_s", 0.0) if finished else 0.0, "tok_s": m.get("tok_s")})
    return out


def grid(config: dict, results_root: str | Path = "results", stale_after: float = 120.0) -> pd.DataFrame:
    """One row per planned run: its grid coordinates, state, tokens planned and done, compute spent and left (FLOPs),
    the throughput its files report (a finished run's wall time; a running run's tokens/s), and what
    :func:`progress` measures the throughput on: ``job_flops`` over ``job_s``, the compute and wall time of its
    finished jobs, and ``jobs``, the jobs it has training now.

    On a ladder a run's jobs are its cooldown and, shared with its trunk's other runs, its trunk's segments up to
    its branch point (:func:`segment_states`): each finished segment's compute and time, and each training one,
    count in equal shares, so that the study counts each once. Before its own job starts, a run is ``running``
    while one of these segments trains, and ``failed`` when one failed."""
    results = Path(results_root) / config["study"]
    sizes = S.model_sizes(config)
    now, rows = time.time(), []
    specs = S.Specs(config)  # one shape per (dataset, size) and the ladders once, not per run
    segments = segment_states(specs, results, now, stale_after)
    for run in specs.runs.values():
        n, spec = sizes[run.size], specs[run.id]
        tokens = spec["tokens"]
        scratch = flops_6nd(n, tokens)
        own_state, m = job_state(results / "runs" / run.id / "metrics.json",
                                 results / "logs" / "train" / f"{run.id}.log", now, stale_after)
        b = spec.get("ladder", {}).get("branch_step", 0)
        segs = [g for g in segments.get(run.trunk, []) if g["end"] <= b]
        if own_state in FINISHED and (m.get("spec_digest") not in (None, spec_digest(spec))
                                      or any(g["state"] not in FINISHED for g in segs)):
            own_state, m = "stale", {}  # to be trained again (on a ladder: a segment up to its branch point too)
        # in steps on a ladder; from scratch, in runs (one step): its files say the share of it done
        steps = ladder.run_steps(tokens, spec["training"]["batch_tokens"]) if "ladder" in spec else 1
        finished = own_state in FINISHED
        done = (1.0 if own_state == "done" else min(1.0, m.get("tokens_seen", 0) / tokens) if finished else
                m["step"] / m["steps"] if m.get("steps") else 0.0)  # the share of its steps its files report
        own = max(0.0, done * steps - b)  # its own job's steps done
        state = own_state
        if state in ("not_started", "stale"):  # its trunk's state up to its branch point
            state = next((g["state"] for g in segs if g["state"] in ("failed", "running")), state)
        trunk_done = [g["steps"] if finished else g["done"] for g in segs]
        spent = sum(d / g["shared"] for d, g in zip(trunk_done, segs)) + own  # in steps, with its shares of the trunk
        planned = sum(g["steps"] / g["shared"] for g in segs) + steps - b
        running = [g for g in segs if g["state"] == "running"]
        per_step = scratch / steps
        rows.append({"run_id": run.id, "dataset": run.dataset, "size": run.size, "n_params": n,
                     "token_multiplier": run.token_multiplier, "lr": run.lr, "seed": run.seed, "state": state,
                     "tokens": tokens, "tokens_done": min(tokens, round(tokens * (sum(trunk_done) + own) / steps)),
                     "flops_spent": per_step * spent, "flops_left": 0.0 if finished else per_step * (planned - spent),
                     "wall_s": m.get("wall_s") if finished else None,
                     "tokens_per_s": m.get("tok_s") if own_state == "running" else
                     next((g["tok_s"] for g in running), None),
                     "job_flops": per_step * ((own if finished else 0.0)
                                              + sum(g["steps"] / g["shared"] for g in segs if g["wall_s"])),
                     "job_s": ((m.get("wall_s") or 0.0) if finished else 0.0)
                     + sum(g["wall_s"] / g["shared"] for g in segs),
                     "jobs": float(own_state == "running") + sum(1 / g["shared"] for g in running)})
    return pd.DataFrame(rows)


def summarize(per_run: pd.DataFrame) -> pd.DataFrame:
    """Counts of each state and compute per (dataset, size, M)."""
    keys = ["dataset", "size", "n_params", "token_multiplier"]
    counts = pd.crosstab([per_run[k] for k in keys], per_run["state"]).reindex(columns=list(STATES), fill_value=0)
    flops = per_run.groupby(keys)[["flops_spent", "flops_left"]].sum()
    out = counts.join(flops).reset_index().sort_values(["dataset", "n_params", "token_multiplier"])
    out.columns.name = None
    return out.rename(columns={"token_multiplier": "M"}).reset_index(drop=True)


def progress(per_run: pd.DataFrame) -> dict:
    """The study's progress: runs finished (done or diverged), running and left (failed, stale or not started); tokens
    and compute done and planned; the throughput of one job and the study's (FLOP/s); the ETA in seconds (None
    before anything measured a throughput)."""
    state = per_run["state"]
    running = per_run[state == "running"]
    if per_run["job_s"].sum() > 0:
        per_job = float(per_run["job_flops"].sum() / per_run["job_s"].sum())
    elif running["tokens_per_s"].notna().any():
        measured = running[running["tokens_per_s"].notna()]
        per_job = float((6.0 * measured["n_params"] * measured["tokens_per_s"]).mean())
    else:
        per_job = None
    jobs = round(per_run["jobs"].sum())
    rate = per_job * max(1, jobs) if per_job else None
    left = float(per_run["flops_left"].sum())
    return {
        "runs": len(per_run), "finished": int(state.isin(FINISHED).sum()), "running": len(running),
        "left": int(state.isin(("failed", "stale", "not_started")).sum()), "failed": int((state == "failed").sum()),
        "tokens_done": int(per_run["tokens_done"].sum()), "tokens": int(per_run["tokens"].sum()),
        "flops_done": float(per_run["flops_spent"].sum()), "flops": float(per_run["flops_spent"].sum()) + left,
        "jobs_running": jobs, "flops_per_s_per_job": per_job, "flops_per_s": rate,
        "eta_s": 0.0 if left == 0 else (left / rate if rate else None),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown until a run reports its speed"
    seconds = round(seconds)
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else
            f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def progress_text(p: dict) -> str:
    """The progress as three lines: runs, tokens and compute, throughput and ETA."""
    share = p["flops_done"] / p["flops"] if p["flops"] else 1.0
    speed = (f"{p['flops_per_s']:.3g} FLOP/s ({p['jobs_running']} running × {p['flops_per_s_per_job']:.3g} per job)"
             if p["flops_per_s"] else "not measured yet")
    return "\n".join([
        f"runs: {p['finished']} finished, {p['running']} running, {p['left']} left "
        f"({p['failed']} failed) of {p['runs']}",
        f"tokens: {p['tokens_done']:,} of {p['tokens']:,}; compute: {p['flops_done']:.3g} of {p['flops']:.3g} FLOPs "
        f"({share:.1%})",
        f"throughput: {speed}; ETA {_duration(p['eta_s'])}",
    ])


def report(label: str, per_run: pd.DataFrame, list_runs: bool = False) -> str:
    """The status as text: the study (``label`` says which and from where), totals, progress, the per-(size, M)
    table, and optionally every run not done."""
    totals = per_run["state"].value_counts().reindex(list(STATES), fill_value=0)
    table = summarize(per_run)
    table["M"] = table["M"].map(S.fmt)
    for col in ("flops_spent", "flops_left"):
        table[col] = table[col].map(lambda x: f"{x:.3g}")
    lines = [
        f"{label}: {len(per_run)} runs planned; " + ", ".join(f"{totals[s]} {s.replace('_', ' ')}" for s in STATES),
        progress_text(progress(per_run)),
        "",
        table.to_string(index=False),
    ]
    if totals["stale"]:
        lines += ["", f"{totals['stale']} stale: finished, but on a spec the study has changed since; snakemake "
                      f"retrains them (`snakemake -n` lists the jobs)"]
    if list_runs:
        todo = per_run[per_run["state"] != "done"]
        lines += ["", "runs not done:", todo[["run_id", "state"]].to_string(index=False) if len(todo) else "(none)"]
    return "\n".join(lines)


def watch(config: dict, label: str, results_root: str | Path, stale_after: float, every: float, out) -> None:
    """Print the study's progress every ``every`` seconds (redrawn in place on a terminal) until every run has
    finished; Ctrl-C stops watching."""
    clear = "\033[H\033[J" if out.isatty() else "\n"  # a file or pipe gets one block after another
    while True:
        per_run = grid(config, results_root, stale_after)
        p = progress(per_run)
        print(f"{clear}{label} at {time.strftime('%H:%M:%S')}\n{progress_text(p)}", file=out, flush=True)
        if p["finished"] == p["runs"]:
            return
        time.sleep(every)
