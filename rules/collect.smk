# collect's output is its manifest, not the tables beside it: Snakemake deletes a job's outputs before it runs and
# after it fails, and a failed collect must keep the previous tables (see scaling/store/collect.py)
rule collect:
    """Finished runs → Parquet tables `runs`, `curves`, `evals`, `downstream`; only new runs are parsed."""
    input:
        # functions, so that only an invocation that builds this job lists every run's files (a job's own does not)
        metrics=lambda wc: [f"{RESULTS}/runs/{run}/metrics.json" for run in RUN_IDS],
        curves=lambda wc: [f"{RESULTS}/runs/{run}/curve.parquet" for run in RUN_IDS],
        downstream=lambda wc: [f"{RESULTS}/runs/{run}/downstream.json" for run in RUN_IDS] if TASKS else [],
    output:
        manifest=f"{RESULTS}/tables/collect.json",
    params:
        out=f"{RESULTS}/tables",
        runs=f"{RESULTS}/runs",  # with STUDY_FILE, which runs to collect: their paths would not fit on a command line
    log:
        f"{RESULTS}/logs/collect.log",
    shell:
        "{SCALING} collect --out {params.out:q} --study {STUDY_FILE:q} --runs-dir {params.runs:q} > {log:q} 2>&1"


rule database:
    """All tables → one self-contained DuckDB file."""
    input:
        rules.collect.output,
        f"{RESULTS}/tables/fits.parquet",
        f"{RESULTS}/tables/parameters.parquet",
        f"{RESULTS}/tables/predictions.parquet",
        f"{RESULTS}/tables/backtest.parquet",
    output:
        f"{RESULTS}/scaling.duckdb",
    params:
        tables=f"{RESULTS}/tables",
    log:
        f"{RESULTS}/logs/database.log",
    shell:
        "{SCALING} database --tables {params.tables:q} --out {output:q} > {log:q} 2>&1"
