# Downstream evaluation: built-in tasks made once per dataset from its validation text, then every run
# scored on its dataset's tasks. Changing `downstream` re-evaluates (and refits); it retrains nothing.
# Harness tasks are scored on each run's transformers export (rule export; `snakemake exports` writes every run's).
TASK_SETS = json.dumps(config["downstream"]["task_sets"], sort_keys=True)
HARNESS = any("harness" in task for task in TASKS.values())
TASK_FILES = {dataset: S.task_files(config, RESULTS, dataset) for dataset in config["datasets"]}
# each dataset's, made once: a study's evaluate jobs share them (10,000 runs: 10,000 jobs)
TASK_PATHS = {dataset: [t["path"] for t in tasks.values() if "path" in t] for dataset, tasks in TASK_FILES.items()}
TASKS_JSON = {dataset: json.dumps(tasks, sort_keys=True) for dataset, tasks in TASK_FILES.items()}


rule tasks:
    """Build one built-in task of one dataset from its prepared validation split (the held-out text)."""
    input:
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    output:
        f"{RESULTS}/tasks/{{dataset}}/{{task}}.jsonl",
    params:
        data=lambda wc, input: os.path.dirname(input.meta),
        kind=lambda wc: TASKS[wc.task]["builtin"],
        examples=config["downstream"]["examples"],
        seed=config["downstream"]["seed"],
        seq_len=config["training"]["seq_len"],  # contexts are cut to fit the models' window
    priority: S.SCORE_PRIORITY  # before the train jobs waiting for a core: a run is scored once it has trained
    log:
        f"{RESULTS}/logs/tasks/{{dataset}}/{{task}}.log",
    shell:
        "{SCALING} tasks --data {params.data:q} --kind {params.kind:q} --examples {params.examples:q} "
        "--seed {params.seed:q} --seq-len {params.seq_len:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    """Score one finished run on its dataset's tasks (log-likelihood of each choice)."""
    input:
        model=f"{RUN_DIR}/model.pt",
        metrics=f"{RUN_DIR}/metrics.json",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
        tasks=lambda wc: TASK_PATHS[wc.dataset],
        harness=S.harness_files(config),
        hf=f"{RUN_DIR}/hf" if HARNESS else [],
    output:
        f"{RUN_DIR}/downstream.json",
    params:
        tasks=lambda wc: TASKS_JSON[wc.dataset],
        task_sets=TASK_SETS,
        batch_size=config["downstream"]["batch_size"],
        run=RUN_DIR,
        data=f"{RESULTS}/data/{{dataset}}",
        hf=lambda wc, input: ["--hf", input.hf] if HARNESS else [],  # of input: not recorded (as start, train.smk)
    threads: 1
    priority: S.SCORE_PRIORITY
    resources:
        gpu=lambda wc: min(run_gpus(wc), 1),
        runtime=config["cluster"]["min_runtime_minutes"],
    log:
        run_log("evaluate"),
    shell:
        "{SCALING} evaluate --run {params.run:q} --data {params.data:q} --tasks {params.tasks:q} "
        "--task-sets {params.task_sets:q} --batch-size {params.batch_size:q} --threads {threads:q} {params.hf:q} "
        "> {log:q} 2>&1"


rule export:
    """One finished run as a Hugging Face transformers model (GPT-2: config, safetensors weights, tokenizer)."""
    input:
        model=f"{RUN_DIR}/model.pt",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
    output:
        directory(f"{RUN_DIR}/hf"),
    params:
        run=lambda wc, input: os.path.dirname(input.model),
        data=lambda wc, input: os.path.dirname(input.meta),
    priority: S.SCORE_PRIORITY
    log:
        run_log("export"),
    shell:
        "{SCALING} export {params.run:q} {output:q} --data {params.data:q} > {log:q} 2>&1"


rule exports:
    """Target: every run of the study exported (`snakemake exports`)."""
    input:
        # a function, as collect's inputs: only an invocation that builds this target lists every run's (10,000 runs:
        # 0.5 s of each job's start, on a SLURM node too)
        lambda wc: [f"{RESULTS}/runs/{run_id}/hf" for run_id in RUN_IDS],
