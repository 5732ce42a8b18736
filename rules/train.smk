wildcard_constraints:
    dataset=r"[^/]+",
    size=r"[^/]+",
    M=r"[^_/]+",
    lr=r"[^_/]+",
    seed=r"\d+",


RUN_DIR = f"{RESULTS}/runs/{{dataset}}/{{size}}/M{{M}}_lr{{lr}}_s{{seed}}"


rule train:
    """Train one grid point; writes its per-step curve and final metrics."""
    input:
        train=f"{RESULTS}/data/{{dataset}}/train.bin",
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.parquet",
    params:
        spec=lambda wc: SPECS[f"{wc.dataset}/{wc.size}/M{wc.M}_lr{wc.lr}_s{wc.seed}"],
        data=lambda wc, input: os.path.dirname(input.meta),
        out=lambda wc, output: os.path.dirname(output.metrics),
    threads: 1
    resources:
        runtime=lambda wc: S.train_runtime_minutes(config, json.loads(SPECS[f"{wc.dataset}/{wc.size}/M{wc.M}_lr{wc.lr}_s{wc.seed}"])),
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{size}}/M{{M}}_lr{{lr}}_s{{seed}}.log",
    shell:
        "{SCALING} train --spec {params.spec:q} --data {params.data} --out {params.out} "
        "--threads {threads} > {log} 2>&1"
