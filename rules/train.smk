# How runs execute (the `engine` section) is not a param: changing it must retrain nothing.
# A run's checkpoint, RUN_DIR/ckpt/, is not an output, so a failed job's rerun resumes from it.
TRAIN = (f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m scaling.cli train"
         if GPUS > 1 else f"{SCALING} train")
ENGINE = S.engine_args(config, RESULTS)


rule train:
    """Train one grid point; writes its per-step curve and final metrics."""
    input:
        train=f"{RESULTS}/data/{{dataset}}/train.bin",
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
        trunk=lambda wc: branch_point(wc),  # a ladder's run starts from its trunk's checkpoint (rules/ladder.smk)
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.parquet",
        model=f"{RUN_DIR}/model.pt",
    params:
        spec=spec,
        data=lambda wc, input: os.path.dirname(input.meta),
        out=lambda wc, output: os.path.dirname(output.metrics),
        start=lambda wc, input: ["--start-from", input.trunk] if input.trunk else [],
    threads: 1
    resources:
        gpu=run_gpus,  # SLURM: --gpus
        runtime=lambda wc: S.train_runtime_minutes(config, json.loads(spec(wc))),
    log:
        run_log("train"),
    shell:
        "{TRAIN} --spec {params.spec:q} --data {params.data:q} --out {params.out:q} "
        "{params.start:q} --threads {threads:q} {ENGINE:q} > {log:q} 2>&1"
