"""A scaling-law study: prepare data → train → evaluate → collect → fit → report.

    snakemake --cores 2                                        # the default study
    snakemake --cores 2 --configfile workflow/studies/smoke.yaml

The study is one config file (see workflow/config.yaml and the schema in
workflow/schemas/). All logic lives in the `scaling` package; rules only name
files, parameters and resources.
"""

import os
import sys

from snakemake.utils import min_version

from scaling import forkserver
from scaling.cli import start_job_server
from scaling.io import spec_json, write_json
from scaling.study.config import load
from scaling.study.runs import ConfigError

min_version("9.0")

if not workflow.configfiles:  # `--configfile` replaces the default study
    configfile: os.path.join(workflow.basedir, "workflow/config.yaml")

try:  # checks the study before any job, or fails naming the field and the fix (a job's own invocation: see load)
    load(workflow.configfiles, config, check_runs=not workflow.remote_exec)
except ConfigError as e:
    sys.exit(f"error in the study: {e}")


report: "workflow/report/workflow.rst"  # the report's landing page: the study's figures and summary


include: "rules/common.smk"  # what the stages share; each stage's file after it uses only that and its own names
include: "rules/prepare.smk"
include: "rules/train.smk"
include: "rules/ladder.smk"  # the trunks of a study with training.ladder
include: "rules/evaluate.smk"
include: "rules/collect.smk"
include: "rules/fit.smk"
include: "rules/report.smk"


localrules: all, tasks, collect, database, fit, report  # cheap: they run where snakemake runs


rule all:
    default_target: True
    input:
        rules.database.output,
        rules.report.output,  # every figure and the summary
        # a target, so that a collect that failed reruns even when no run changed since (a restored file)
        rules.collect.output,


# Train and collect jobs read the checked study (the train command gets its run's id, not its spec), written here,
# once the DAG is built and before any job runs: in a dry run it is not, nor in a SLURM job's own Snakemake.
# Not a rule's output: a study rule rerun for any edit made Snakemake skip the new runs of a grid (masked behind it).
onstart:
    write_json(STUDY_FILE, config)
    if config["engine"]["forkserver"] and not workflow.non_local_exec and not LOCAL_GPU:  # scaling.forkserver
        start_job_server(f"{RESULTS}/logs/forkserver.log")
    else:  # a server of an outer study (this snakemake run by one of its jobs) serves none of this one's
        os.environ.pop(forkserver.ENV, None)


CONFIG_FILE = os.path.relpath(workflow.configfiles[-1])  # what `scaling sql` and `scaling status` take


onsuccess:
    print(
        f"\nStudy '{STUDY}' done: {len(RUN_IDS)} runs.\n"
        f"  summary:   {RESULTS}/summary.md\n"
        f"  figures:   {RESULTS}/figures/\n"
        f"  database:  {RESULTS}/scaling.duckdb   (query it: scaling sql --configfile {CONFIG_FILE} "
        f"\"SELECT * FROM runs\")\n"
        f"  tables:    {RESULTS}/tables/*.parquet\n"
    )
