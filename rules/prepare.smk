rule prepare:
    """Tokenize one dataset into train/val token arrays."""
    input:
        lambda wc: S.dataset_files(config, wc.dataset),
    output:
        train=f"{RESULTS}/data/{{dataset}}/train.bin",
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    params:
        dataset=lambda wc: json.dumps(config["datasets"][wc.dataset], sort_keys=True),
        out=lambda wc, output: os.path.dirname(output.meta),
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    shell:
        "{SCALING} prepare --dataset {params.dataset:q} --out {params.out:q} > {log:q} 2>&1"
