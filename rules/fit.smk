DOWNSTREAM_TASK = S.downstream_task(config)


rule fit:
    """Every law the study supports, per dataset, with intervals: the over-training law, the downstream error law
    (when runs are scored on tasks) and the optimal-LR law (when the grid sweeps LR at 2+ multipliers); and how
    each fared on the runs it was not fitted on (the backtest table)."""
    input:
        rules.collect.output.manifest,
    output:
        overtraining=f"{RESULTS}/fit/overtraining.json",
        downstream=f"{RESULTS}/fit/downstream.json",
        optimal_lr=f"{RESULTS}/fit/optimal_lr.json",
        fits=f"{RESULTS}/tables/fits.parquet",
        parameters=f"{RESULTS}/tables/parameters.parquet",
        predictions=f"{RESULTS}/tables/predictions.parquet",
        backtest=f"{RESULTS}/tables/backtest.parquet",
    params:
        fit=json.dumps(config["fit"], sort_keys=True),
        sizes=json.dumps(S.model_sizes(config), sort_keys=True),
        task=["--task", DOWNSTREAM_TASK] if DOWNSTREAM_TASK else [],
        out=lambda wc, output: os.path.dirname(output.overtraining),
        runs=f"{RESULTS}/tables/runs.parquet",
        downstream=f"{RESULTS}/tables/downstream.parquet",
    threads: 4  # bootstrap refits in parallel; Snakemake gives at most --cores
    log:
        f"{RESULTS}/logs/fit.log",
    shell:
        "{SCALING} fit-study --runs {params.runs:q} --downstream {params.downstream:q} --fit-config {params.fit:q} "
        "--sizes {params.sizes:q} {params.task:q} --out-dir {params.out:q} --fits-table {output.fits:q} "
        "--parameters {output.parameters:q} --predictions {output.predictions:q} --backtest {output.backtest:q} "
        "--threads {threads:q} > {log:q} 2>&1"
