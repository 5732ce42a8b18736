# What the stages' rules share, included first: each stage's file uses these names and its own, never another
# stage's. A run's files are named by its id, S.RUN_ID, whose fields are the wildcards of the run rules.
import json
import os
import shlex
import sys

from scaling.study import runs as S
from scaling.study.config import has_gpu

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
SPECS = S.Specs(config)  # each run's, computed only when a job this invocation builds asks for it
RUN_IDS = list(SPECS.runs)
TASKS = config["downstream"]["tasks"]
GPUS = config["engine"]["gpus_per_run"]  # per training run; an evaluation takes one of them, if any
LOCAL_GPU = has_gpu()
PYTHON = shlex.quote(sys.executable)  # the interpreter running snakemake, venv or not
SCALING = f"{PYTHON} -m scaling.cli"

RUN_DIR = f"{RESULTS}/runs/{S.RUN_ID}"  # one run's files, with the run's wildcards
STUDY_FILE = f"{RESULTS}/study.json"  # the checked study, written when jobs start (Snakefile: onstart)


def run_log(stage):
    """The log of one run's job of a stage, with the run's wildcards."""
    return f"{RESULTS}/logs/{stage}/{S.RUN_ID}.log"


def run_gpus(wildcards):
    """The GPUs a run's train job asks for: the study's when jobs go to a cluster (SLURM: --gpus) or this machine
    has a GPU; none for a run trained here on the CPU, so that its resources say so."""
    return GPUS if workflow.non_local_exec or LOCAL_GPU else 0


def spec(wildcards):
    """The spec of the run whose wildcards these are, as a dict."""
    return SPECS[S.RUN_ID.format(**wildcards)]


wildcard_constraints:
    dataset=r"[^/]+",
    size=r"[^/]+",
    M=r"[^_/]+",
    lr=r"[^_/]+",
    seed=r"\d+",
