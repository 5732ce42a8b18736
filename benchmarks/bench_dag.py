"""What the head node pays for a large study: the dry run, its memory, and the start of one job.

For each size it writes a study of that many runs (10 model sizes × 5 token multipliers × learning
rates × seeds, the embedded corpus, one downstream task) and measures, each in a fresh process:

- `snakemake -n` of the study (wall time and peak memory), with the project's default profile;
- the same for an empty workflow with the same rules, wildcards, files (their paths too) and jobs and nothing else
  (no params, functions or study): Snakemake's own share, so the project's is the difference;
- one job's start: Snakemake invoked as a SLURM job invokes it (`--mode remote`, the job's
  `--target-jobs`, `--allowed-rules train`), timed from the start of the process to the moment the
  train command's shell opens its log (inputs in place as empty files; the command is then stopped).

    python benchmarks/bench_dag.py                   # 1,000, 4,000 and 10,000 runs
    python benchmarks/bench_dag.py --runs 2000       # one size
    python benchmarks/bench_dag.py --smoke           # 200 runs, for CI
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from scaling.study import runs as S

REPO = Path(__file__).resolve().parents[1]

SIZES = [{"name": f"d{8 * (i + 2)}", "d_model": 8 * (i + 2), "n_layers": 2, "n_heads": 2} for i in range(10)]
MULTIPLIERS = [10, 20, 40, 80, 160]

# Snakemake alone: the study's rules with their wildcards, inputs, outputs and logs (the same paths, under R, the
# study's results folder), and nothing else
EMPTY = '''
IDS = open("run_ids.txt").read().split()
wildcard_constraints:
    dataset=r"[^/]+", size=r"[^/]+", M=r"[^_/]+", lr=r"[^_/]+", seed=r"\\d+"
RUN = "{dataset}/{size}/M{M}_lr{lr}_s{seed}"
rule all:
    input: R + "db", R + "summary.md", R + "tables/collect.json"
rule prepare:
    output: R + "data/{dataset}/train.bin", R + "data/{dataset}/val.bin", R + "data/{dataset}/meta.json"
    log: R + "logs/prepare/{dataset}.log"
    shell: "true"
rule tasks:
    input: R + "data/{dataset}/val.bin", R + "data/{dataset}/meta.json"
    output: R + "tasks/{dataset}/{task}.jsonl"
    log: R + "logs/tasks/{dataset}/{task}.log"
    shell: "true"
rule train:
    input: R + "data/{dataset}/train.bin", R + "data/{dataset}/val.bin", R + "data/{dataset}/meta.json"
    output: f"{R}runs/{RUN}/metrics.json", f"{R}runs/{RUN}/curve.parquet", f"{R}runs/{RUN}/model.pt"
    log: f"{R}logs/train/{RUN}.log"
    shell: "true"
rule evaluate:
    input: f"{R}runs/{RUN}/model.pt", f"{R}runs/{RUN}/metrics.json", R + "data/{dataset}/meta.json", R + "tasks/{dataset}/spelling.jsonl"
    output: f"{R}runs/{RUN}/downstream.json"
    log: f"{R}logs/evaluate/{RUN}.log"
    shell: "true"
rule collect:
    input: [f"{R}runs/{r}/{f}" for f in ("metrics.json", "curve.parquet", "downstream.json") for r in IDS]
    output: R + "tables/collect.json"
    shell: "true"
rule fit:
    input: R + "tables/collect.json"
    output: R + "fit.json"
    shell: "true"
rule database:
    input: R + "tables/collect.json", R + "fit.json"
    output: R + "db"
    shell: "true"
rule report:
    input: R + "tables/collect.json", R + "fit.json"
    output: R + "summary.md"
    shell: "true"
'''


def study(n_runs: int) -> dict:
    """A study of ``n_runs`` runs: 10 sizes × 5 multipliers × learning rates × seeds (n_runs a multiple of 50)."""
    per_point = n_runs // (len(SIZES) * len(MULTIPLIERS))
    lrs = per_point // 5 if per_point >= 5 else per_point  # and 5 seeds
    seeds = per_point // max(1, lrs)
    assert lrs * seeds * 50 == n_runs, f"use a multiple of 250 runs (or 50, 100, 150, 200), not {n_runs}"
    return {
        "study": f"dag{n_runs}",
        "datasets": {"bible": {"source": "embedded"}},
        "models": SIZES,
        "training": {"seq_len": 64, "batch_tokens": 512},
        "grid": [{"sizes": [m["name"] for m in SIZES], "token_multipliers": MULTIPLIERS,
                  "learning_rates": [round(0.001 * (k + 1), 4) for k in range(lrs)], "seeds": list(range(seeds))}],
        "downstream": {"examples": 100, "tasks": {"spelling": {"builtin": "spelling"}}, "task_sets": {}},
    }


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and output of a command run to its end; it must succeed."""
    with tempfile.TemporaryFile("w+") as output:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        out = output.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def first_job_start(work: Path, config_file: Path, run: S.Run, results: Path, timeout: float = 120.0) -> float:
    """Seconds from starting Snakemake as a SLURM job does to the train command's shell opening its log."""
    for name in ("train.bin", "val.bin", "meta.json"):
        (results / "data" / run.dataset / name).parent.mkdir(parents=True, exist_ok=True)
        (results / "data" / run.dataset / name).touch()
    log = results / "logs" / "train" / f"{run.id}.log"
    log.unlink(missing_ok=True)
    target = f"train:dataset={run.dataset},size={run.size},M={S.fmt(run.token_multiplier)},lr={S.fmt(run.lr)}," \
             f"seed={run.seed}"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--target-jobs", target,
           "--allowed-rules", "train", "--cores", "1", "--force", "--nolock", "--no-hooks", "--ignore-incomplete",
           "--max-inventory-time", "0", "--nocolor", "--mode", "remote", "--configfiles", str(config_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not log.exists():
            if proc.poll() is not None:
                raise SystemExit(f"the job's snakemake exited before the command started:\n"
                                 f"{proc.stdout.read().decode()[-3000:]}")
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"the train command did not start within {timeout:.0f} s")
            time.sleep(0.005)
        return time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(n_runs: int, root: Path) -> dict:
    config = study(n_runs)
    work = root / config["study"]
    work.mkdir()
    config_file = work / "study.yaml"
    config_file.write_text(yaml.safe_dump(config))
    planned = S.runs(config)
    assert len(planned) == n_runs
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--profile", str(REPO / "profiles/default")]
    wall, rss, out = timed([*snakemake, "--snakefile", str(REPO / "Snakefile"), "--configfile", str(config_file)],
                           cwd=work)
    jobs = int(out.split("\ntotal", 1)[1].split()[0])
    empty = root / f"empty{n_runs}"
    empty.mkdir()
    (empty / "Snakefile").write_text(f'R = "results/{config["study"]}/"\n' + EMPTY)
    (empty / "run_ids.txt").write_text("\n".join(r.id for r in planned))
    base_wall, base_rss, base_out = timed(snakemake, cwd=empty)
    base_jobs = int(base_out.split("\ntotal", 1)[1].split()[0])
    assert base_jobs == jobs, f"the empty workflow has {base_jobs} jobs, the study {jobs}"
    start = first_job_start(work, config_file, planned[-1], work / "results" / config["study"])
    return {"runs": n_runs, "jobs": jobs, "dry_run_s": wall, "peak_mb": rss, "empty_s": base_wall,
            "empty_mb": base_rss, "job_start_s": start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="*", default=[1000, 4000, 10000])
    parser.add_argument("--smoke", action="store_true", help="200 runs, for CI")
    args = parser.parse_args()
    sizes = [200] if args.smoke else args.runs
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        print(f"{'runs':>6} {'jobs':>6} {'dry run':>9} {'peak MB':>8} {'empty':>8} {'empty MB':>9} "
              f"{'project share':>14} {'job start':>10}")
        for n in sizes:
            r = measure(n, Path(tmp))
            share = 1 - r["empty_s"] / r["dry_run_s"]
            print(f"{r['runs']:>6,} {r['jobs']:>6,} {r['dry_run_s']:>8.1f}s {r['peak_mb']:>8.0f} {r['empty_s']:>7.1f}s "
                  f"{r['empty_mb']:>9.0f} {share:>14.0%} {r['job_start_s']:>9.2f}s", flush=True)


if __name__ == "__main__":
    main()
