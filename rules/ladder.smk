# The ladder (`training.ladder`, scaling/train/ladder.py): the runs of one (dataset, size, lr, seed) branch their
# cooldowns off one constant-LR trunk. The trunk trains in segments, one job each, from one branch point to the
# next: each starts from the previous segment's checkpoint and writes its own, an output, so that a run's job
# (rule train, whose input `trunk` is branch_point) starts as soon as the checkpoint it branches from exists.
# Included after rules/train.smk: it uses TRAIN and ENGINE. Without a ladder it defines no job.
PLANS = S.ladders(config)
SEGMENTS = S.trunk_segments(config, PLANS)  # "<trunk id>/step<end>" → the segment's spec
TRUNK_DIR = f"{RESULTS}/trunks/{S.TRUNK_ID}"  # a trunk's checkpoints, with the run's wildcards but M


def trunk_checkpoint(trunk, step):
    """The checkpoint a trunk writes at a branch point ``step`` (none at step 0, where it starts)."""
    return [f"{RESULTS}/trunks/{trunk}/step{step}.pt"] if step else []


def branch_point(wildcards):
    """A ladder's run: the trunk checkpoint its cooldown starts from; none for a run from scratch."""
    ladder = spec(wildcards).get("ladder")
    return trunk_checkpoint(ladder["trunk"], ladder["branch_step"]) if ladder else []


def segment(wildcards):
    return SEGMENTS[f"{S.TRUNK_ID.format(**wildcards)}/step{wildcards.end}"]


rule trunk_segment:
    """Train one segment of a ladder's trunk, from its previous branch point to the next; writes the checkpoint."""
    input:
        train=f"{RESULTS}/data/{{dataset}}/train.bin",
        val=f"{RESULTS}/data/{{dataset}}/val.bin",
        meta=f"{RESULTS}/data/{{dataset}}/meta.json",
        previous=lambda wc: trunk_checkpoint(segment(wc)["run_id"], segment(wc)["segment"][0]),
    output:
        f"{TRUNK_DIR}/step{{end}}.pt",
    params:
        spec=lambda wc: json.dumps(segment(wc), sort_keys=True),
        data=lambda wc, input: os.path.dirname(input.meta),
        out=lambda wc, output: os.path.dirname(output[0]),
        start=lambda wc, input: ["--start-from", input.previous] if input.previous else [],
    threads: 1
    priority: lambda wc: S.job_priority(segment(wc))  # the longest jobs first
    resources:
        gpu=run_gpus,
        runtime=lambda wc: S.train_runtime_minutes(config, segment(wc)),
    log:
        f"{RESULTS}/logs/trunk/{S.TRUNK_ID}/step{{end}}.log",
    wildcard_constraints:
        end=r"\d+",
    shell:
        "{TRAIN} --spec {params.spec:q} --data {params.data:q} --out {params.out:q} {params.start:q} "
        "--threads {threads:q} {ENGINE:q} > {log:q} 2>&1"
