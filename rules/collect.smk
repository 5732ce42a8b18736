rule collect:
    """Finished runs → Parquet tables `runs`, `curves`, `evals`, `downstream`; only new runs are parsed."""
    input:
        metrics=[f"{RESULTS}/runs/{r.id}/metrics.json" for r in RUNS],
        curves=[f"{RESULTS}/runs/{r.id}/curve.parquet" for r in RUNS],
        downstream=[f"{RESULTS}/runs/{r.id}/downstream.json" for r in RUNS] if TASKS else [],
    output:
        runs=f"{RESULTS}/tables/runs.parquet",
        curves=f"{RESULTS}/tables/curves.parquet",
        evals=f"{RESULTS}/tables/evals.parquet",
        downstream=f"{RESULTS}/tables/downstream.parquet",
    params:
        out=f"{RESULTS}/tables",
    log:
        f"{RESULTS}/logs/collect.log",
    shell:
        "{SCALING} collect --out {params.out:q} {input.metrics:q} > {log:q} 2>&1"


rule database:
    """All tables → one self-contained DuckDB file."""
    input:
        rules.collect.output,
        f"{RESULTS}/tables/fits.parquet",
        f"{RESULTS}/tables/predictions.parquet",
    output:
        f"{RESULTS}/scaling.duckdb",
    params:
        tables=f"{RESULTS}/tables",
    log:
        f"{RESULTS}/logs/database.log",
    shell:
        "{SCALING} database --tables {params.tables:q} --out {output:q} > {log:q} 2>&1"
