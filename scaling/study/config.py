"""Loading a study and checking, before any job, that every run of it can run.

:func:`load` is the one loader of a study, for the Snakefile and for
``scaling status``. In order, it

1. reads each study file strictly (:func:`read_study_file`): a YAML syntax
   error, or a key given twice in one mapping (YAML would keep the last), is
   reported with its file and line, and a YTE template (code) is refused;
2. validates the config against ``workflow/schemas/config.schema.yaml`` with
   strict types (:data:`StrictValidator`: a number is finite, an integer is a
   whole number below 2**63) and fills the schema's defaults. Every name that
   becomes part of a path or a command (the study, datasets, models, tasks,
   task sets, and the names that refer to them) matches the schema's
   ``$defs/name`` pattern;
3. checks what refers across sections (:func:`scaling.study.runs.check`);
4. checks that every planned run can run: the runs (a derived model name is a
   safe name, each run trains a step after warmup), the data (every split
   holds a window, no text file is empty, task files parse and fit the
   window, harness tasks exist with local data), the machines (a batch splits
   over a run's processes, training fits the memory of the device, the time
   limits are finite), the ladder (with ``training.ladder``: a WSD schedule, a
   cooldown fraction in (0, 1), every branch point after the warmup), the fit
   (each ``fit.fit_on`` filter selects planned runs, and the fit set has the
   distinct points the loss law needs; the bootstrap fits in memory) and the
   engine (``engine.tensorboard`` has its package).

Every error is a :class:`scaling.study.runs.ConfigError` naming the field (or the
file and line) and the fix.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

from scaling.study import runs as S
from scaling.data.prepare import not_text, resolve_files, split_sizes, vocab_size
from scaling.train.flops import planned_tokens
from scaling.train.schedules import warmup_length
from scaling.train.shapes import Shape, count_params
from scaling.evaluate.tasks import TaskError, read_task
from scaling.evaluate.harness import HarnessError, check_task as check_harness
from scaling.fit.fit_set import default_fit_on, points_needed
from scaling.fit.laws import LAWS

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
YTE_KEY = "__use_yte__"  # Snakemake evaluates a YAML file that starts with it as a YTE template (Python code)
GB = 1e9
TEXT_SNIFF = 4096  # bytes of each text file read at load to tell text from a binary file


# -- the loader -----------------------------------------------------------------------------------------------------
def load(files: list[str | Path], config: dict | None = None, check_runs: bool = True, fittable: bool = True) -> dict:
    """The study of ``files``, checked before any job and filled with the schema's defaults.

    ``files`` are the study's YAML files, later ones overriding earlier ones
    (as Snakemake merges several ``--configfile``). ``config`` is Snakemake's
    own reading of them, with any ``--config`` overrides: it is what is
    checked and filled, in place. Without it (``scaling status``) the files'
    merged content is. The files are read strictly either way. Without
    ``check_runs`` the checks of step 4 are left out: a job's own Snakemake
    invocation (on a SLURM node) runs what the head node checked. Without
    ``fittable`` the study need not plan the fit set its loss law needs
    (:func:`check_fittable`): ``scaling status`` and ``scaling plan`` read a
    study that may not be fittable yet, such as the small start a plan grows.
    """
    from snakemake.utils import update_config

    read = [read_study_file(f) for f in files]
    if config is None:
        config = {}
        for part in read:
            update_config(config, part)
    validate_schema(config)
    S.check(config)
    for check in (check_model_names, check_steps, check_ladder, check_corpora, check_task_files, check_devices,
                  check_time_limits, check_fit_sets, *([check_fittable] if fittable else []),
                  check_engine) if check_runs else ():
        check(config)
    return config


# -- 1. the files ---------------------------------------------------------------------------------------------------
def read_study_file(path: str | Path) -> dict:
    """A study file as plain YAML: a mapping, without templates, each key once per mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise S.ConfigError(f"{path}: no such file; fix: give the path of the study's YAML file") from None
    except UnicodeDecodeError as e:
        raise S.ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); fix: save it as UTF-8") from None
    try:
        _unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), path, [], set())
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        fix = ("write plain values, without tags" if isinstance(e, yaml.constructor.ConstructorError) else
               "correct the YAML there (indent with spaces, close every bracket and quote, put a space after each "
               "colon)")
        raise S.ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: {e.problem or e.context}; "
                            f"fix: {fix}") from None
    if not isinstance(config, dict):
        got = "it is empty" if config is None else f"not a {type(config).__name__}"
        raise S.ConfigError(f"{path}: a study file is a YAML mapping (study: …, datasets: …), {got}; "
                            f"fix: write one as workflow/config.yaml does")
    if YTE_KEY in config:
        raise S.ConfigError(f"{path}: {YTE_KEY}: a YTE template runs Python code, and a study file holds plain "
                            f"values; fix: remove {YTE_KEY} and write the values out")
    return config


def _unique_keys(node: yaml.Node | None, path: Path, field: list, seen_nodes: set) -> None:
    """Raise for a key given twice in one mapping of a composed YAML document (merge keys ``<<`` excepted)."""
    if node is None or id(node) in seen_nodes:  # an empty document; an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            line = key.start_mark.line + 1
            if name in first and key.tag != "tag:yaml.org,2002:merge":
                raise S.ConfigError(f"{path}, line {line}: {S.field_path([*field, name])}: the key is given twice "
                                    f"(first at line {first[name]}), and YAML would silently keep the last; "
                                    f"fix: keep one of them")
            first[name] = line
            _unique_keys(value, path, [*field, name], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _unique_keys(item, path, [*field, i], seen_nodes)


# -- 2. the schema --------------------------------------------------------------------------------------------------
def _finite_number(_, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _integer(_, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _finite_number, "integer": _integer}),
)
"""JSON Schema 2020-12 with the types a run can use: YAML's .nan/.inf and 2.0 for an integer are refused."""


@functools.cache
def schema() -> dict:
    return yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10× faster


def validate_schema(config: dict) -> None:
    """Validate ``config`` against the schema with strict types, then fill its defaults (Snakemake's validate)."""
    from snakemake.utils import validate

    error = jsonschema.exceptions.best_match(StrictValidator(schema()).iter_errors(config))
    if error is not None:
        raise S.explain_schema_error(error, schema())
    validate(config, str(SCHEMA))


# -- 3. the runs ----------------------------------------------------------------------------------------------------
def check_model_names(config: dict) -> None:
    """A name derived from a model's shape (a model without `name`) is a safe name too, and its widths are whole."""
    pattern = schema()["$defs"]["name"]
    for i, model in enumerate(config["models"]):
        name = S.model_name(model)
        if not re.fullmatch(pattern["pattern"], name) or len(name) > pattern["maxLength"]:
            raise S.ConfigError(f"models[{i}]: the name derived from its shape, {name!r}, cannot be part of a path; "
                                f"fix: give the model a `name` of letters, digits, '_', '.' and '-'")
        if "d_model" in model and round(model.get("ff_ratio", 4.0) * model["d_model"]) < 1:
            raise S.ConfigError(f"models[{i}].ff_ratio: {model['ff_ratio']} × d_model {model['d_model']} rounds to a "
                                f"feed-forward width of 0; fix: use ff_ratio ≥ {1 / model['d_model']:.3g}")


def _block_sizes(config: dict, block: dict) -> list[tuple[int, str]]:
    """(N, model name) of every model of a grid block on each of its datasets, smallest first."""
    models = {S.model_name(m): m for m in config["models"]}
    return sorted((count_params(S.shape_of(models[size], config["training"],
                                           vocab_size(config["datasets"][ds])))["n_params"], size)
                  for ds in block.get("datasets") or config["datasets"] for size in block["sizes"])


def check_steps(config: dict) -> None:
    """Every run trains at least one step after its warmup (as scaling/train/loop.py counts them).

    steps = ceil(D / batch_tokens) with D = M·N (:func:`scaling.train.flops.planned_tokens`),
    warmup = :func:`scaling.train.schedules.warmup_length`.
    """
    training = config["training"]
    fixed = training.get("warmup_steps")
    least_steps = next(s for s in itertools.count(1) if s >= warmup_length(training, s) + 1)
    for i, block in enumerate(config["grid"]):
        for (n, size), (j, m) in itertools.product(_block_sizes(config, block), enumerate(block["token_multipliers"])):
            batch = S.size_training(config, size)["batch_tokens"]
            d = planned_tokens(n, m)
            steps = math.ceil(d / batch)
            warmup = warmup_length(training, steps)
            if steps < warmup + 1:
                raise S.ConfigError(
                    f"grid[{i}].token_multipliers[{j}]: M = {m:g} gives {size} (N = {n:,}) D = M·N = "
                    f"{d:,} tokens, {steps} step(s) of {batch} tokens (its batch_tokens) with {warmup} of warmup"
                    + (" (training.warmup_steps)" if fixed is not None else "")
                    + f"; a run needs at least one step after warmup; fix: use M ≥ "
                    f"{_round(((least_steps - 1) * batch + 1) / n, math.ceil):g}"
                    + (f", or training.warmup_steps below {steps}" if fixed is not None else ""))


def check_ladder(config: dict) -> None:
    """With ``training.ladder``: the schedule is WSD, its cooldown fraction is in (0, 1), and every run branches off
    its trunk after the ladder's warmup (:mod:`scaling.train.ladder`)."""
    training = config["training"]
    if not training["ladder"]:
        return
    if training["schedule"] != "wsd":
        raise S.ConfigError(f"training.ladder: a ladder branches each run's cooldown off a constant-LR trunk, which "
                            f"needs training.schedule: wsd, not {training['schedule']}; fix: set training.schedule: "
                            f"wsd, or remove training.ladder")
    f = training["cooldown_fraction"]
    if not 0 < f < 1:
        raise S.ConfigError(f"training.cooldown_fraction: {f:g} leaves a ladder's runs "
                            f"{'no cooldown' if f <= 0 else 'no trunk to share'}; a ladder needs a fraction strictly "
                            f"between 0 and 1; fix: use one such as 0.2 (Hägele et al. 2024)")
    warmup, plans = training.get("warmup_steps"), S.ladders(config)
    if warmup is None:
        shortest = min(plan.steps[0] for _, plan in plans.values())
        raise S.ConfigError(f"training.ladder: a ladder's trunk and runs share one warmup, and "
                            f"training.warmup_fraction gives each run its own; fix: set training.warmup_steps, the "
                            f"warmup of every run (Hägele et al. 2024 warm up all theirs over one count of steps), "
                            f"e.g. {round(training['warmup_fraction'] * shortest)}, warmup_fraction of the shortest "
                            f"run's {shortest} steps")
    for trunk, (group, plan) in plans.items():
        for run, b in zip(group, plan.branch_steps):
            if b < max(1, warmup):
                raise S.ConfigError(
                    f"training.warmup_steps: {run.id} would branch off its trunk {trunk} at step {b}, inside "
                    f"the ladder's warmup of {warmup} steps; fix: lower training.warmup_steps"
                    + (f" to at most {b}" if b else "") + " or training.cooldown_fraction, or drop the run's "
                    "token multiplier")


def _round(x: float, direction) -> float:
    """``x`` rounded to two significant digits, up (``math.ceil``) or down (``math.floor``)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(f"{direction(x / unit) * unit:.2g}")


# -- 4. the data ----------------------------------------------------------------------------------------------------
def check_corpora(config: dict) -> None:
    """Every split of every dataset holds seq_len + 2 tokens, what scaling/train/loop.py needs; no text file is empty."""
    need = config["training"]["seq_len"] + 2
    for name, ds in config["datasets"].items():
        files = resolve_files(ds["files"]) if ds["source"] == "files" else []
        if empty := [str(f) for f in files if f.stat().st_size == 0]:
            raise S.ConfigError(f"datasets.{name}.files: {', '.join(empty[:5])} {'is' if len(empty) == 1 else 'are'} "
                                f"empty; fix: give it text, or leave it out of the pattern")
        for f in files:  # the beginning of each, which shows a binary file (prepare checks the whole)
            with open(f, "rb") as text:
                if problem := not_text(text.read(TEXT_SNIFF), whole=False):
                    raise S.ConfigError(f"datasets.{name}.files: {f} is not UTF-8 text ({problem}); fix: convert it "
                                        f"to UTF-8 (e.g. iconv -t utf-8), or leave it out of the pattern")
        source = {"files": f"files {', '.join(map(str, files[:5]))}" + (" …" if len(files) > 5 else ""),
                  "tokens": f"token arrays {ds.get('train')}, {ds.get('val')}"}.get(ds["source"], "the corpus")
        try:
            sizes = split_sizes(ds)
        except (ValueError, OSError) as e:
            raise S.ConfigError(f"datasets.{name}: {source}: {e}; fix: give flat, non-empty arrays of integer token "
                                f"ids (.npy, or raw .bin of `dtype`)") from None
        unit = "tokens" if ds["source"] == "tokens" else "bytes" + (" (BPE makes fewer tokens)" if
                                                                     ds.get("tokenizer") == "bpe" else "")
        for split, n in sizes.items():
            if n < need:
                raise S.ConfigError(
                    f"datasets.{name}: the {'validation' if split == 'val' else 'training'} split of {source} has "
                    f"{n:,} {unit}, fewer than the training.seq_len + 2 = {need:,} a run needs; fix: give more "
                    + ("tokens" if ds["source"] == "tokens" else "text")
                    + (", a larger val_fraction" if split == "val" and ds["source"] == "files" else "")
                    + ", or a smaller training.seq_len")


def check_task_files(config: dict) -> None:
    """Every task file is well formed, and on byte-level data each choice fits the model's window."""
    seq_len = config["training"]["seq_len"]
    bytes_data = [d for d, ds in config["datasets"].items()
                  if ds["source"] != "tokens" and ds.get("tokenizer", "bytes") == "bytes"]
    for name, task in config["downstream"]["tasks"].items():
        if "harness" in task:
            check_harness_task(config, name, task)
        if "path" not in task:
            continue
        try:
            examples = read_task(task["path"])
        except (TaskError, UnicodeDecodeError) as e:
            raise S.ConfigError(f"downstream.tasks.{name}.path: {e}"
                                + ("" if "fix:" in str(e) else "; fix: write one {\"context\": …, \"choices\": […], "
                                   "\"gold\": i} object per line")) from None
        longest = max(len(c.encode("utf-8")) for ex in examples for c in ex["choices"])
        if bytes_data and longest > seq_len:
            raise S.ConfigError(f"downstream.tasks.{name}.path: a choice of {longest} bytes is longer than the "
                                f"window of byte-level models on {bytes_data}, training.seq_len = {seq_len}; fix: "
                                f"shorten the choices, or raise training.seq_len")


def check_harness_task(config: dict, name: str, task: dict) -> None:
    """An lm-evaluation-harness task: the harness installed, a multiple-choice task of its `include` directory with
    local data and the task's metric, and runs that export to transformers (:mod:`scaling.evaluate.harness`)."""
    field = f"downstream.tasks.{name}.harness"
    if config["training"]["qk_layernorm"]:
        raise S.ConfigError(f"{field}: harness tasks are scored on each run's transformers (GPT-2) export, and runs "
                            f"trained with training.qk_layernorm have no such export (GPT-2 has no LayerNorm on "
                            f"queries and keys); fix: score these runs on JSONL tasks (`path`) instead")
    try:
        check_harness(task["harness"], task["include"], task.get("metric", "acc_norm"))
    except HarnessError as e:
        raise S.ConfigError(f"{field}: {e}") from None


# -- 5. the machines ------------------------------------------------------------------------------------------------
def training_memory(shape: Shape, tokens: int, gpu: bool) -> tuple[float, float]:
    """A lower bound on what one training process holds at its peak, in bytes: (state, activations).

    - state: fp32 weights, gradients and AdamW's two moments, 16 bytes a parameter;
    - activations of ``tokens`` tokens that the backward pass surely needs: the
      input of every matrix product, which its weight's gradient is made from
      (per layer and token 3·d + d_ff values: the inputs of the q/k/v, output and
      two MLP projections; d for the output layer), in fp32 on a CPU and bf16
      (autocast) on a GPU, and the logits, V fp32 values a token.

    Everything else a step keeps (LayerNorm and GELU inputs, attention, the
    log-softmax, allocator slack, the runtime) comes on top, so a run this bound
    does not fit surely fails; on a CPU the measured peak was 2.0–4.1× it (six shapes, d = 32 to 768).
    """
    per_token = (shape.n_layers * (3 * shape.d_model + shape.d_ff) + shape.d_model) * (2 if gpu else 4)
    return 16.0 * count_params(shape)["n_params"], tokens * (per_token + shape.vocab_size * 4)


def _ram() -> int:
    """This machine's memory, or its cgroup's limit when lower (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _gpu_memory() -> int | None:
    """The memory of this machine's smallest GPU, as nvidia-smi reports it; None without nvidia-smi or a GPU.

    nvidia-smi answers from the driver, so Snakemake's own process neither imports torch (seconds, at every parse)
    nor opens a CUDA context on a GPU its jobs train on.
    """
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True)
    mib = [int(x) for x in out.stdout.split() if x.isdigit()]
    return min(mib) * 2**20 if out.returncode == 0 and mib else None


def has_gpu() -> bool:
    """Whether this machine has a GPU that torch sees (a job run here trains on it)."""
    return _gpu_memory() is not None


def device_memory(config: dict) -> tuple[float, str, bool]:
    """The memory one run trains in: (bytes, what it is, whether it is a GPU's).

    ``cluster.gpu_memory_gb`` when the study gives it (runs on other machines),
    else this machine's smallest GPU, else its RAM (a CPU run).
    """
    if "gpu_memory_gb" in config["cluster"]:
        gb = config["cluster"]["gpu_memory_gb"]
        return gb * GB, f"{_size(gb * GB)} of cluster.gpu_memory_gb", True
    if (gpu := _gpu_memory()) is not None:
        return gpu, f"{_size(gpu)} of this machine's GPU", True
    ram = _ram()
    return ram, f"{_size(ram)} of this machine's RAM", False


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GB:,.1f} GB" if n_bytes >= 0.1 * GB else f"{n_bytes / 1e6:,.1f} MB"


def check_devices(config: dict) -> None:
    """A step's sequences split evenly over a run's processes, each model's training fits in memory, and so do
    each run's per-step losses.

    On GPUs each process holds the model's state and its share of the batch's
    activations; on a CPU the processes of a run share the machine's RAM.
    """
    training, gpus = config["training"], config["engine"]["gpus_per_run"]
    limit, where, gpu = device_memory(config)
    models = {S.model_name(m): (i, m) for i, m in enumerate(config["models"])}
    for ds, size in sorted({(run.dataset, run.size) for run in S.runs(config)}):
        i, model = models[size]
        field, batch = S.batch_field(config, i)
        seqs = batch // training["seq_len"]
        if seqs % gpus:
            raise S.ConfigError(f"engine.gpus_per_run: the {seqs} sequences of a step of {size} ({field} / seq_len) "
                                f"do not split over {gpus} processes; fix: make {field} a multiple of "
                                f"{gpus * training['seq_len']}, or change gpus_per_run")
        shape = S.shape_of(model, training, vocab_size(config["datasets"][ds]))
        state, activations = training_memory(shape, batch // (gpus if gpu else 1), gpu)
        need = state + activations if gpu else gpus * state + activations
        if need > limit:
            raise S.ConfigError(
                f"models[{i}] ({size}) on dataset {ds}: training needs at least {_size(need)} (weights, gradients "
                f"and AdamW state {_size(state)} per process; activations of {field} = "
                f"{batch:,} at seq_len {training['seq_len']}: {_size(activations)}), more than the "
                f"{where}; fix: lower {field}, use a smaller model, or spread each run over more GPUs "
                f"(engine.gpus_per_run); set cluster.gpu_memory_gb when runs train on other machines")
    ram = _ram()
    for i, block in enumerate(config["grid"]):
        for (n, size), (j, m) in itertools.product(_block_sizes(config, block), enumerate(block["token_multipliers"])):
            batch = S.size_training(config, size)["batch_tokens"]
            steps = planned_tokens(n, m) / batch
            if 8 * math.ceil(steps) > ram:  # the trainer keeps one 8-byte loss a step in memory
                raise S.ConfigError(
                    f"grid[{i}].token_multipliers[{j}]: M = {m:g} gives {size} (N = {n:,}) {steps:.3g} "
                    f"steps, whose losses (8 bytes a step, kept by the trainer) exceed the {_size(ram)} of this "
                    f"machine's RAM; fix: use M ≤ {_round(ram / 8 * batch / n, math.floor):g}")


def check_time_limits(config: dict) -> None:
    """Every train job's SLURM time limit (:func:`scaling.study.runs.train_runtime_minutes`) is a finite number.

    A limit depends on the run's N and D alone, so one run of each (dataset, size, M) is checked.
    """
    points = {(run.dataset, run.size, run.token_multiplier): run for run in S.runs(config)}
    specs = S.Specs(config, list(points.values()))
    for run in points.values():
        try:
            S.train_runtime_minutes(config, specs[run.id])
        except OverflowError:
            raise S.ConfigError(f"cluster: the time limit of {run.id}, runtime_margin × 6·N·D / "
                                f"train_flops_per_second, is not finite; fix: give cluster.train_flops_per_second "
                                f"and runtime_margin values of their documented order") from None


# -- 6. the fit -----------------------------------------------------------------------------------------------------
def _in_filter(point: dict, flt: dict) -> bool:
    """Whether a point ({size, token_multiplier}) matches a fit filter: each key's value, or one of its list (as
    :func:`scaling.fit.tables.filters_sql`)."""
    return all(point[key] in (v if isinstance(v, list) else [v]) for key, v in flt.items())


def _point(run: S.Run) -> dict:
    return {"size": run.size, "token_multiplier": run.token_multiplier}


def check_fit_sets(config: dict) -> None:
    """Each ``fit.fit_on`` filter matches a planned run, the fit set has a run on every dataset, and the
    bootstrap's run weights (8 bytes per resample and point) fit in memory.

    ``fit.targets`` are points to predict, trained or not, so they are not matched against the grid; their sizes
    are checked by :func:`scaling.study.runs.check`.
    """
    filters, planned = config["fit"].get("fit_on"), S.runs(config)
    points = len({(r.dataset, r.size, r.token_multiplier) for r in planned})
    resamples, ram = config["fit"]["bootstrap"], _ram()
    if 8 * resamples * points > ram:
        raise S.ConfigError(f"fit.bootstrap: the run weights of {resamples:,} resamples of {points} points exceed the "
                            f"{_size(ram)} of this machine's RAM; fix: use at most {ram // (8 * points):,} (the "
                            f"default is 1000)")
    for i, flt in enumerate(filters or []):
        if not any(_in_filter(_point(run), flt) for run in planned):
            raise S.ConfigError(f"fit.fit_on[{i}]: {flt} matches no planned run; fix: filter on {_grid(planned)}, "
                                f"or add such runs to the grid")
    for ds in config["datasets"]:
        runs = [r for r in planned if r.dataset == ds]
        if runs and filters and not any(_in_filter(_point(r), flt) for r in runs for flt in filters):
            raise S.ConfigError(f"fit.fit_on: no filter matches a planned run on dataset {ds!r}, so its law cannot "
                                f"be fitted; fix: add a filter on {_grid(runs)}")


def check_fittable(config: dict) -> None:
    """The fit set on every dataset holds the distinct (N, M) points the over-training law needs
    (:func:`scaling.fit.fit_set.points_needed`, as the fit stage checks them, with every planned run finished):
    else every run would train and then the fit would fail.

    The downstream law is fitted on the same points, one per (size, M), and needs fewer (one per parameter and
    one more): this check covers it.
    """
    filters, planned = config["fit"].get("fit_on"), S.runs(config)
    models, grids = {S.model_name(m): m for m in config["models"]}, {}
    for ds in config["datasets"]:
        points = sorted({(r.size, r.token_multiplier) for r in planned if r.dataset == ds})
        vocab = vocab_size(config["datasets"][ds])
        n = {size: count_params(S.shape_of(models[size], config["training"], vocab))["n_params"]
             for size in {size for size, _ in points}}  # each size's N once, not once per M
        grids[ds] = [{"size": size, "token_multiplier": m, "n_params": n[size]} for size, m in points]
    for ds, grid in grids.items():
        if grid:
            chosen = filters or default_fit_on(grid)
            _check_fit_set_size(ds, [p for p in grid if any(_in_filter(p, flt) for flt in chosen)], grid,
                                filters is None)


def _check_fit_set_size(ds: str, fit_set: list[dict], grid: list[dict], default: bool) -> None:
    """The fit set of a dataset (``fit_set``, of its planned points ``grid``) has the distinct (N, M) points the
    over-training law needs."""
    needed, distinct = points_needed("overtraining"), {(p["n_params"], p["token_multiplier"]) for p in fit_set}
    if len(distinct) >= needed:
        return
    spare = [p for p in grid if (p["n_params"], p["token_multiplier"]) not in distinct]
    raise S.ConfigError(
        f"fit.fit_on: the fit set on dataset {ds!r} "
        + ("(the default: every M = 20 point and the smallest model at its largest M) " if default else "")
        + f"holds {len(distinct)} distinct (N, M) point(s), {_grid_points(fit_set)}, and the over-training law, "
        f"with {len(LAWS['overtraining'].params)} parameters, needs at least {needed}; every run would train and "
        f"then the fit would fail; fix: add {needed - len(distinct)} model size(s) of other N at M = "
        + " or ".join(f"{m:g}" for m in sorted({m for _, m in distinct})) + " to the grid"
        + (f", or widen fit.fit_on to take in more of the planned points ({_grid_points(spare)})" if spare else ""))


def _grid_points(points: list[dict]) -> str:
    """Points ({size, token_multiplier}), for a message."""
    return ", ".join(f"{p['size']} at M = {p['token_multiplier']:g}" for p in points)


def _grid(runs: list[S.Run]) -> str:
    """The sizes and token multipliers of some runs, for a message."""
    return (f"the planned sizes {sorted({r.size for r in runs})} and token multipliers "
            f"{sorted({r.token_multiplier for r in runs})}")


def check_engine(config: dict) -> None:
    """``engine.tensorboard`` has its optional extra installed (else every train job would fail on it)."""
    if config["engine"]["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        raise S.ConfigError("engine.tensorboard: true needs the tensorboard package, which is not installed; fix: "
                            "pip install -e '.[tensorboard]', or set engine.tensorboard: false")
