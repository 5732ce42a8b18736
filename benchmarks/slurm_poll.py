"""How many SLURM queries one status poll makes, and the per-job overhead, with many jobs active.

Runs a throw-away workflow of N jobs (`sleep`) through the submitit executor plugin on the
SLURM cluster of this machine (start one with tests/slurm/start.sh), with a `sacct` shim on
PATH that logs every call. Prints the calls per poll cycle and the job ids each call names.

    python benchmarks/slurm_poll.py            # 50 separate jobs
    python benchmarks/slurm_poll.py --smoke    # 4 jobs, for CI
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule job:
    output: "out/{{i}}.txt"
    resources: runtime=5, mem_mb=100, slurm_partition="debug"
    shell: "sleep {sleep}; echo $SLURM_JOB_ID > {{output}}"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--sleep", type=int, default=1, help="seconds each job sleeps")
    parser.add_argument("--poll", type=int, default=5, help="seconds between status checks")
    parser.add_argument("--smoke", action="store_true", help="4 short jobs")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.sleep, args.poll = 4, 2, 2

    work = Path(tempfile.mkdtemp(prefix="slurm-poll-"))
    (work / "Snakefile").write_text(SNAKEFILE.format(n=args.jobs, sleep=args.sleep))
    shim, calls = work / "bin", work / "sacct-calls.log"
    shim.mkdir()
    real = shutil.which("sacct")
    (shim / "sacct").write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {calls}\nexec {real} "$@"\n')
    (shim / "sacct").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--executor", "submitit", "--jobs", str(args.jobs),
         "--submitit-array-size", "1", "--seconds-between-status-checks", str(args.poll),
         "--max-status-checks-per-second", "10", "--latency-wait", "5"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"workflow failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    lines = calls.read_text().splitlines() if calls.exists() else []
    stamps = [float(line.split()[0]) for line in lines]
    # calls less than a second apart belong to the same poll cycle
    cycles = [[stamps[0]]] if stamps else []
    for t in stamps[1:]:
        (cycles[-1].append(t) if t - cycles[-1][-1] < 1.0 else cycles.append([t]))
    ids_per_call = [line.count(" -j ") for line in lines]
    print(f"jobs: {args.jobs} separate SLURM jobs, each sleeping {args.sleep} s; poll every {args.poll} s")
    slots = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    print(f"workflow wall time: {wall:.1f} s; per-job overhead (SLURM + the job's own snakemake), "
          f"{slots} jobs at a time: {(wall * slots - args.sleep * args.jobs) / args.jobs:.1f} s")
    print(f"sacct calls: {len(lines)} in {len(cycles)} poll cycles; "
          f"most calls in one cycle: {max(map(len, cycles), default=0)}")
    print(f"job ids named per call: max {max(ids_per_call, default=0)}, mean "
          f"{sum(ids_per_call) / max(1, len(ids_per_call)):.1f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
