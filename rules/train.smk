# How runs execute (the `engine` section) is not a param: changing it must retrain nothing.
# A run's checkpoint, RUN_DIR/ckpt/, is not an output, so a failed job's rerun resumes from it.
TRAIN = (f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m scaling.cli train"
         if GPUS > 1 else f"{SCALING} train")
ENGINE = S.engine_args(config, RESULTS)
LADDER = bool(config["training"].get("ladder"))  # without one, no run has a trunk: no function per job asks


rule train:
    """Train one grid point; writes its per-step curve and final metrics."""
    input:
        train=f"{RESULTS}/data/{{dataset}}/train.bin",
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
        trunk=(lambda wc: branch_point(wc)) if LADDER else [],  # a ladder's run starts from its trunk's checkpoint
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.parquet",
        model=f"{RUN_DIR}/model.pt",
    params:
        # the run's spec: not in the command (the job reads it from STUDY_FILE), but a run retrains when it changes
        spec=lambda wc: spec_json(spec(wc)),
        run=S.RUN_ID,
        data=f"{RESULTS}/data/{{dataset}}",
        out=RUN_DIR,
        # a function of input, so that Snakemake does not record it among the params a run reruns for (nor did it)
        start=lambda wc, input: ["--start-from", input.trunk] if input.trunk else [],
    threads: 1
    priority: lambda wc: S.job_priority(spec(wc))  # the longest jobs first
    resources:
        gpu=run_gpus,  # SLURM: --gpus
        runtime=lambda wc: S.train_runtime_minutes(config, spec(wc)),
    log:
        run_log("train"),
    shell:
        "{TRAIN} --study {STUDY_FILE:q} --run {params.run:q} --data {params.data:q} --out {params.out:q} "
        "{params.start:q} --threads {threads:q} {ENGINE:q} > {log:q} 2>&1"
