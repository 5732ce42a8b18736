rule fit:
    """The over-training law per dataset on the study's fit set, with bootstrap intervals; predictions for every run and target."""
    input:
        runs=rules.collect.output.runs,
    output:
        fit=f"{RESULTS}/fit/overtraining.json",
        fits=f"{RESULTS}/tables/fits.parquet",
        predictions=f"{RESULTS}/tables/predictions.parquet",
    params:
        fit=json.dumps(config["fit"], sort_keys=True),
        sizes=json.dumps(S.model_sizes(config), sort_keys=True),
    log:
        f"{RESULTS}/logs/fit.log",
    shell:
        "{SCALING} fit overtraining --data {input.runs} --by dataset --fit-config {params.fit:q} "
        "--sizes {params.sizes:q} --out {output.fit} --fits-table {output.fits} --predictions {output.predictions} "
        "> {log} 2>&1"
