"""A study: its checked config and the runs it defines.

The config is loaded and checked by :func:`scaling.study.config.load`: against
``workflow/schemas/config.schema.yaml`` (which also fills defaults), then by
:func:`check` here for what a schema cannot see (names that must refer to each
other, files that must exist), then for what each run needs. This module also
expands the grid into runs.

A run is identified by the values that define it — dataset, model name, token
multiplier M, learning rate, seed — never by its position in a list, so adding
to the grid leaves existing runs' ids and paths unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

from scaling.data.prepare import dataset_inputs, resolve_files, vocab_size
from scaling.train import ladder
from scaling.train.flops import flops_6nd, planned_tokens
from scaling.train.shapes import Shape, count_params, shape_for_params


class ConfigError(ValueError):
    """A study config that cannot run; the message names the field and the fix."""


SHAPE_KEYS = ("d_model", "n_layers", "n_heads")
RULE_KEYS = ("aspect_ratio", "head_dim")  # only with `params` (see scaling.train.shapes)


def model_name(model: dict) -> str:
    if "name" in model:
        return model["name"]
    ff = model.get("ff_ratio", 4.0)
    if "params" in model:
        name = f"n{round(model['params'])}"
    else:
        name = f"d{model['d_model']}-L{model['n_layers']}-H{model['n_heads']}"
    return name if ff == 4.0 else f"{name}-ff{ff:g}"


def shape_of(model: dict, training: dict, vocab: int) -> Shape:
    """A model entry's shape: explicit, or by the rule of :mod:`scaling.train.shapes` from its target `params`."""
    common = dict(ff_ratio=float(model.get("ff_ratio", 4.0)), vocab_size=vocab, seq_len=training["seq_len"],
                  qk_layernorm=training.get("qk_layernorm", False))
    if "params" in model:
        rule = {k: model[k] for k in RULE_KEYS if k in model}
        return shape_for_params(model["params"], **rule, **common)
    return Shape(d_model=model["d_model"], n_layers=model["n_layers"], n_heads=model["n_heads"], **common)


def size_training(config: dict, size: str) -> dict:
    """The training settings of the runs of model ``size``: the study's ``training``, with the size's own
    ``batch_tokens`` where its ``models`` entry gives one. Larger models train best on larger batches (the critical
    batch grows as the loss falls, McCandlish et al. 2018, arXiv 1812.06162), so scaling ladders grow the batch
    with the model (OLMo-core's model ladder; DeepSeek LLM, arXiv 2401.02954)."""
    model = next(m for m in config["models"] if model_name(m) == size)
    return {**config["training"], **{k: model[k] for k in ("batch_tokens",) if k in model}}


def batch_field(config: dict, i: int) -> tuple[str, int]:
    """Where model ``i``'s batch comes from, as an error names it, and its value: its own ``batch_tokens`` or the
    study's (:func:`size_training`)."""
    model = config["models"][i]
    if "batch_tokens" in model:
        return f"models[{i}].batch_tokens", model["batch_tokens"]
    return "training.batch_tokens", config["training"]["batch_tokens"]


def study_vocab(config: dict) -> int:
    """The vocabulary size model sizes are quoted at: the first dataset's (check() makes `size` targets unambiguous)."""
    return vocab_size(next(iter(config["datasets"].values())))


def fmt(x: float) -> str:
    """A number as it appears in run ids: shortest round-tripping form (20, 0.003, 1e-05)."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(float(x))


RUN_ID = "{dataset}/{size}/M{M}_lr{lr}_s{seed}"
"""A run's id, which is also its path under ``runs/`` and ``logs/<stage>/``; the rules match it as a wildcard pattern."""
_RUN_ID_PARTS = [(before, name) for before, name, _, _ in Formatter().parse(RUN_ID)]


def run_id(dataset: str, size: str, token_multiplier: float, lr: float | None = None, seed: int | None = None) -> str:
    """:data:`RUN_ID` of these values (numbers as :func:`fmt` writes them); an imported run without a learning rate
    or seed leaves out that part (``_lr…``, ``_s…``), the text before it in the pattern with it."""
    values = {"dataset": dataset, "size": size, "M": fmt(float(token_multiplier)),
              "lr": None if lr is None else fmt(float(lr)), "seed": None if seed is None else int(seed)}
    return "".join(f"{before}{values[name]}" for before, name in _RUN_ID_PARTS if values[name] is not None)


TRUNK_ID = "{dataset}/{size}/trunk_lr{lr}_s{seed}"
"""The id (and path under ``trunks/``) of the trunk a ladder's runs branch from: :data:`RUN_ID` without M."""


@dataclass(frozen=True)
class Run:
    dataset: str
    size: str
    token_multiplier: float
    lr: float
    seed: int

    @property
    def id(self) -> str:
        return run_id(self.dataset, self.size, self.token_multiplier, self.lr, self.seed)

    @property
    def trunk(self) -> str:
        """The id of the trunk the run branches from, under ``training.ladder``."""
        return TRUNK_ID.format(dataset=self.dataset, size=self.size, lr=fmt(self.lr), seed=self.seed)


def field_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(top level)"


def _same_kind(value, json_type) -> bool:
    """Whether ``value`` is of the kind a JSON type names, ignoring range (nan is a number, 2.5 an integer)."""
    kinds = {"number": (int, float), "integer": (int, float), "string": str, "array": list, "object": dict}
    return isinstance(value, kinds.get(json_type, ())) and not isinstance(value, bool)


def yaml_number(number: float) -> str:
    """``number`` as YAML 1.1 (PyYAML) reads a float, exactly: with a dot, and a signed exponent if any (1.0e+6,
    not 1e6, which it reads as text); a whole number also as an integer."""
    mantissa, _, exponent = repr(number).partition("e")
    text = (mantissa if "." in mantissa else mantissa + ".0") + (f"e{exponent}" if exponent else "")
    return text + (f" or {int(number)}" if number.is_integer() and abs(number) < 1e15 else "")


def _number_problem(value, kind: str) -> tuple[str, str] | None:
    """What is wrong with a value a ``number`` or ``integer`` field refused, and the fix; None if it is no number."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a finite number", "give a finite number (YAML's .nan and .inf are not)"
        return f"{value} is not a whole number", f"write a whole number, e.g. {int(value)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} is out of range", "use a smaller value"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number):
            return f"{value!r} is text, not a {kind}", "give a finite number"
        return f"{value!r} is text, not a {kind}", f"write {value} as YAML reads a number: {yaml_number(number)}"
    return None


def explain_schema_error(error, schema: dict) -> ConfigError:
    """A one-line :class:`ConfigError` for a ``jsonschema.ValidationError`` of a study against ``schema``.

    It names the offending field and, as the fix, the allowed keys, values or
    form, and the nearest description along the schema path.
    """
    while error.validator in ("oneOf", "anyOf") and error.context:  # explain the alternative the value is nearest
        error = min(error.context, key=lambda e: 0 if e.validator != "type" else
                    1 if _same_kind(e.instance, e.validator_value) else 2)
    field, value, v = field_path(error.absolute_path), error.instance, error.validator_value
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(known))
        field = field_path([*error.absolute_path, *unknown[:1]])
        return ConfigError(f"{field}: unknown key; fix: remove it" + (f", or use one of {known}" if known else ""))
    message = f"the name {value!r} is not allowed" if "propertyNames" in error.absolute_schema_path else error.message
    fix = {
        "exclusiveMinimum": f"use a value greater than {v}",
        "minimum": f"use a value of at least {v}",
        "exclusiveMaximum": f"use a value less than {v}",
        "maximum": f"use a value of at most {v}",
        "minItems": f"list at least {v} item(s)",
        "minProperties": f"give at least {v} entry",
        "type": f"give a value of type {v}",
        "enum": f"use one of {v}",
        "required": "add it",
        "pattern": f"use a value matching {v}",
        "maxLength": f"use at most {v} characters",
    }.get(error.validator, "see workflow/schemas/config.schema.yaml")
    if error.validator == "type" and v in ("number", "integer"):
        message, fix = _number_problem(value, v) or (message, fix)
    if error.validator == "pattern" and v == schema["$defs"]["name"]["pattern"]:
        fix = "use only letters, digits, '_', '.' and '-', starting with a letter or digit (it becomes part of " \
              "file paths and commands)"
    node, hint = schema, None
    for part in list(error.absolute_schema_path)[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "description" in node:
            hint = " ".join(node["description"].split())
    return ConfigError(f"{field}: {message}; fix: {fix}" + (f" ({hint})" if hint else ""))


def _relative(path: str) -> str:
    """Where a relative path in a study is looked for, for an error's fix (nothing for an absolute one)."""
    return "" if Path(path).is_absolute() else ", relative to the directory snakemake runs in,"


def check(config: dict) -> None:
    """Raise :class:`ConfigError` for what the schema cannot catch."""
    names = [model_name(m) for m in config["models"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"models: the name(s) {dupes} appear twice; fix: give each model a unique `name`")
    training = config["training"]
    for i, m in enumerate(config["models"]):
        given = [k for k in SHAPE_KEYS if k in m]
        where = f"models[{i}]" + (f" ({m['name']})" if "name" in m else "")
        field, batch = batch_field(config, i)
        if batch % training["seq_len"]:
            raise ConfigError(f"{field}: {batch} is not a multiple of seq_len={training['seq_len']}; "
                              f"fix: use a multiple, e.g. {max(1, round(batch / training['seq_len'])) * training['seq_len']}")
        if "params" in m and given:
            raise ConfigError(f"{where}: give either `params` or {list(SHAPE_KEYS)}, not both; fix: remove {given}")
        if "params" not in m:
            if len(given) < len(SHAPE_KEYS):
                missing = [k for k in SHAPE_KEYS if k not in m]
                raise ConfigError(f"{where}: missing {missing}; fix: give all of {list(SHAPE_KEYS)}, "
                                  f"or a target parameter count `params` instead")
            if rule := [k for k in RULE_KEYS if k in m]:
                raise ConfigError(f"{where}: {rule} only apply with `params`; fix: remove them")
            if m["d_model"] % m["n_heads"]:
                raise ConfigError(
                    f"{where}: d_model={m['d_model']} is not divisible by n_heads={m['n_heads']}; "
                    f"fix: choose n_heads that divides d_model"
                )
        else:
            n = count_params(shape_of(m, training, study_vocab(config)))["n_params"]
            if not 0.5 <= n / m["params"] <= 2.0:
                raise ConfigError(
                    f"{where}.params: the nearest shape of the sizing rule has {n:,} parameters, not about "
                    f"{m['params']:,.0f}; fix: lower head_dim or aspect_ratio, or give d_model, n_layers and n_heads"
                )
    for name, ds in config["datasets"].items():
        tokenizer = ds.get("tokenizer", "bytes")
        if ds["source"] == "tokens":
            for key in ("train", "val", "vocab_size"):
                if key not in ds:
                    raise ConfigError(f"datasets.{name}.{key}: required with `source: tokens`; "
                                      f"fix: add it (train/val: .npy or .bin token arrays; vocab_size: their vocabulary)")
            if "tokenizer" in ds:
                raise ConfigError(f"datasets.{name}.tokenizer: pre-tokenized data has no tokenizer to run; fix: remove it")
            for key in ("train", "val"):
                if not resolve_files([ds[key]]):
                    raise ConfigError(f"datasets.{name}.{key}: no file {ds[key]!r}; fix: give the path of a token array "
                                      f"(.npy or .bin){_relative(ds[key])} that exists")
        elif tokenizer == "bpe" and ds.get("vocab_size", 0) <= 256:
            raise ConfigError(f"datasets.{name}.vocab_size: a BPE vocabulary needs more than the 256 byte tokens it "
                              f"starts from; fix: set vocab_size, e.g. 4096")
        elif tokenizer == "bytes" and ds.get("vocab_size", 256) != 256:
            raise ConfigError(f"datasets.{name}.vocab_size: the byte tokenizer's vocabulary is 256; "
                              f"fix: remove vocab_size, or set `tokenizer: bpe`")
        for key in ("train", "val", "dtype"):
            if key in ds and ds["source"] != "tokens":
                raise ConfigError(f"datasets.{name}.{key}: only used with `source: tokens`; fix: remove it")
        if ds["source"] == "files":
            if "files" not in ds:
                raise ConfigError(f"datasets.{name}: source is `files` but no `files` are listed; fix: add `files: [path/*.txt]`")
            for pattern in ds["files"]:
                if not resolve_files([pattern]):
                    raise ConfigError(
                        f"datasets.{name}.files: no file matches {pattern!r}; "
                        f"fix: give a path or glob{_relative(pattern)} that exists"
                    )
        elif "files" in ds:
            raise ConfigError(f"datasets.{name}.files: only used with `source: files`; fix: remove it or set `source: files`")
    for i, block in enumerate(config["grid"]):
        for field, known in (("sizes", names), ("datasets", list(config["datasets"]))):
            for j, value in enumerate(block.get(field, [])):
                if value not in known:
                    raise ConfigError(
                        f"grid[{i}].{field}[{j}]: unknown {field[:-1]} {value!r}; fix: use one of {known}"
                    )
    fit = config.get("fit", {})
    for key in ("fit_on", "targets"):
        for i, item in enumerate(fit.get(key) or []):
            sizes = item.get("size", [])
            for size in sizes if isinstance(sizes, list) else [sizes]:
                if size not in names:
                    raise ConfigError(f"fit.{key}[{i}].size: unknown size {size!r}; fix: use one of {names}")
    for i, item in enumerate(fit.get("targets", [])):
        if ("size" in item) == ("n_params" in item):
            raise ConfigError(f"fit.targets[{i}]: give exactly one of `size` or `n_params`; fix: keep one of them")
    check_downstream(config)
    vocabs = {name: vocab_size(ds) for name, ds in config["datasets"].items()}
    if len(set(vocabs.values())) > 1 and any("size" in t for t in fit.get("targets", [])):
        raise ConfigError(f"fit.targets: a size has a different N on each dataset here (vocabularies {vocabs}); "
                          f"fix: name the targets by `n_params` instead of `size`")


def _task_folder(folder: str) -> bool:
    """Whether a harness `include` is a folder of its own: not the directory snakemake runs in nor one above it, not
    in `results/`, not hidden (`.venv`, `.git`): every file under it becomes an input of each evaluate job."""
    d, here = Path(folder).resolve(), Path.cwd().resolve()
    inside = d.relative_to(here).parts if d.is_relative_to(here) else ()
    return not (d == here or d in here.parents or inside[:1] == ("results",) or any(p.startswith(".") for p in inside))


def check_downstream(config: dict) -> None:
    """The `downstream` section: each task built-in or a readable file, on text data; task sets of known tasks."""
    ds = config["downstream"]
    tasks = ds["tasks"]
    tokens = [d for d, spec in config["datasets"].items() if spec["source"] == "tokens"]
    for name, task in tasks.items():
        if sum(key in task for key in ("builtin", "path", "harness")) != 1:
            raise ConfigError(f"downstream.tasks.{name}: give exactly one of `builtin` (a task made from held-out "
                              f"text), `path` (a JSONL file) or `harness` (an lm-evaluation-harness task); fix: keep "
                              f"one of them")
        if ("harness" in task) != ("include" in task):
            raise ConfigError(f"downstream.tasks.{name}: `harness` (the task's name) and `include` (the directory of "
                              f"its YAML files) go together; fix: give both, or neither")
        if "include" in task and not _task_folder(task["include"]):
            raise ConfigError(f"downstream.tasks.{name}.include: {task['include']!r} is the directory snakemake "
                              f"runs in, one above it, in `results/` or hidden, and every file under it would become "
                              f"an input of each evaluate job; fix: keep "
                              f"the task's YAML and data in a folder of their own, e.g. harness_tasks/")
        if "path" in task and not Path(task["path"]).is_file():
            raise ConfigError(f"downstream.tasks.{name}.path: no file {task['path']!r}; fix: give the path of a "
                              f"JSONL task file, relative to the directory snakemake runs in")
        if tokens:
            raise ConfigError(f"downstream.tasks.{name}: tasks are text, and dataset(s) {tokens} are pre-tokenized, "
                              f"with no tokenizer to make or score text tasks; fix: remove the downstream tasks, or "
                              f"train on text datasets")
    for name, members in ds["task_sets"].items():
        if name in tasks:
            raise ConfigError(f"downstream.task_sets.{name}: a task has this name too; fix: rename the set")
        for i, t in enumerate(members):
            if t not in tasks:
                raise ConfigError(f"downstream.task_sets.{name}[{i}]: unknown task {t!r}; fix: use one of "
                                  f"{sorted(tasks)}")
    chosen = config["fit"].get("downstream_task")
    if chosen is not None and chosen not in (*tasks, *ds["task_sets"]):
        raise ConfigError(f"fit.downstream_task: unknown task or task set {chosen!r}; fix: use one of "
                          f"{sorted([*tasks, *ds['task_sets']])}")


def task_files(config: dict, results: str, dataset: str) -> dict[str, dict]:
    """The tasks a run on ``dataset`` is scored on: {name: {"path": JSONL, "metric": …}}, or for a harness task
    {name: {"harness": task, "include": directory, "metric": …}}."""
    return {name: ({"harness": task["harness"], "include": task["include"]} if "harness" in task else
                   {"path": task.get("path") or f"{results}/tasks/{dataset}/{name}.jsonl"})
            | {"metric": task.get("metric", "acc_norm")}
            for name, task in config["downstream"]["tasks"].items()}


def harness_files(config: dict) -> list[str]:
    """Every file under the harness tasks' `include` directories (their YAML, and data kept beside it)."""
    includes = {task["include"] for task in config["downstream"]["tasks"].values() if "harness" in task}
    return sorted(str(p) for d in includes for p in Path(d).rglob("*") if p.is_file())


def downstream_task(config: dict) -> str | None:
    """The task (set) the downstream law is fitted to: fit.downstream_task, else the first set, else the first task."""
    ds = config["downstream"]
    return config["fit"].get("downstream_task") or next(iter(ds["task_sets"]), None) or next(iter(ds["tasks"]), None)


def runs(config: dict) -> list[Run]:
    """All runs of the study (the union of the grid blocks), in a stable order."""
    out = set()  # of (dataset, size, M, lr, seed): tuples hash and sort much faster than Runs
    for block in config["grid"]:
        out.update(itertools.product(
            block.get("datasets") or list(config["datasets"]),
            block["sizes"],
            map(float, block["token_multipliers"]),
            map(float, block["learning_rates"]),
            map(int, block.get("seeds", [0])),
        ))
    return [Run(*values) for values in sorted(out)]


def model_shape(config: dict, dataset: str, size: str) -> Shape:
    """The shape of model ``size`` on ``dataset`` (whose vocabulary sizes the embeddings)."""
    model = next(m for m in config["models"] if model_name(m) == size)
    return shape_of(model, config["training"], vocab_size(config["datasets"][dataset]))


def run_tokens(config: dict, run: Run, shape: Shape | None = None) -> int:
    """A run's token budget D = M·N (``shape``: the run's :func:`model_shape`, for a caller that has it already)."""
    shape = shape or model_shape(config, run.dataset, run.size)
    return planned_tokens(count_params(shape)["n_params"], run.token_multiplier)


def ladders(config: dict, trunk: str | None = None) -> dict[str, tuple[list[Run], ladder.Plan]]:
    """Under ``training.ladder``, each trunk's id (or only ``trunk``) → its runs, by ascending M, and its plan; else
    nothing."""
    training = config["training"]
    if not training.get("ladder"):  # a study config not filled by the schema (a synthetic testbed's) has no ladder
        return {}
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs(config):
        if trunk in (None, run.trunk):
            groups[run.trunk].append(run)
    shapes = {(r.dataset, r.size): model_shape(config, r.dataset, r.size) for g in groups.values() for r in g[:1]}
    return {key: (group, ladder.plan([run_tokens(config, r, shapes[r.dataset, r.size]) for r in group],
                                     size_training(config, group[0].size)["batch_tokens"],
                                     training["cooldown_fraction"]))
            for key, group in groups.items()}


def run_spec(config: dict, run: Run, plans: dict | None = None, shape: Shape | None = None) -> dict:
    """Everything that defines a run's training (and nothing else), as a JSON-able dict.

    A run of a ladder also has ``ladder``: its trunk's id and the step it branches at
    (from ``plans``, :func:`ladders` of the config, when given; else from its trunk's plan). ``shape`` is the run's
    :func:`model_shape`, for a caller that has it already.
    """
    shape = shape or model_shape(config, run.dataset, run.size)
    spec = {
        "run_id": run.id,
        "dataset": run.dataset,
        "size": run.size,
        "shape": shape.to_dict(),
        "token_multiplier": run.token_multiplier,
        "tokens": run_tokens(config, run, shape),
        "lr": run.lr,
        "seed": run.seed,
        "training": dict(sorted(size_training(config, run.size).items())),
    }
    if config["training"].get("ladder"):
        group, plan = (plans if plans is not None else ladders(config, run.trunk))[run.trunk]
        spec["ladder"] = {"trunk": run.trunk, "branch_step": plan.branch_steps[group.index(run)]}
    return spec


def trunk_segments(config: dict, plans: dict | None = None) -> dict[str, dict]:
    """Each trunk segment's id, ``<trunk id>/step<end>``, → its spec: the trunk's spec
    (:func:`scaling.train.ladder.trunk_spec`) with the segment's first and end step."""
    out = {}
    for trunk, (group, plan) in (plans if plans is not None else ladders(config)).items():
        base = ladder.trunk_spec(run_spec(config, group[0], plans))
        for first, end in plan.segments:
            out[f"{trunk}/step{end}"] = {**base, "segment": [first, end]}
    return out


class Specs:
    """The specs of a study's planned runs by run id, each computed when asked for.

    A study of 10,000 runs has 10,000 specs, but a Snakemake invocation needs only
    those of the jobs it builds (one, in a job's own invocation), so none is
    computed when the Snakefile is read; each model's shape is computed once per dataset.
    """

    def __init__(self, config: dict, planned: list[Run] | None = None):
        self.config = config
        self.runs = {run.id: run for run in (runs(config) if planned is None else planned)}
        self._shapes: dict[tuple[str, str], Shape] = {}

    def __getitem__(self, run_id: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise ConfigError(f"run {run_id!r}: not a run of study {self.config['study']!r}; fix: use the id of a "
                              f"planned run (`scaling status --runs` lists them), or add it to the grid")
        key = (run.dataset, run.size)
        if key not in self._shapes:
            self._shapes[key] = model_shape(self.config, *key)
        return run_spec(self.config, run, self.plans, self._shapes[key])

    @functools.cached_property
    def plans(self) -> dict[str, tuple[list[Run], ladder.Plan]]:
        """The study's ladders (:func:`ladders`), made once, when first asked for."""
        return ladders(self.config)


def model_sizes(config: dict) -> dict[str, int]:
    """Model name → N (all parameters), at the vocabulary of :func:`study_vocab`."""
    vocab = study_vocab(config)
    return {model_name(m): count_params(shape_of(m, config["training"], vocab))["n_params"] for m in config["models"]}


def engine_args(config: dict, results: str) -> list[str]:
    """The train command's execution flags from the `engine` section (never part of a run's spec); ``results`` is
    the study's results folder, where TensorBoard's files go."""
    engine = config["engine"]
    return (["--checkpoint-every", str(engine["checkpoint_every"])]
            + (["--keep-checkpoints"] if engine["keep_checkpoints"] else [])
            + ([] if engine["compile"] else ["--no-compile"])
            + (["--tensorboard", f"{results}/tensorboard"] if engine["tensorboard"] else []))


def dataset_files(config: dict, dataset: str) -> list[str]:
    """The input files of a dataset (none for the embedded corpus), so edits to them re-prepare it."""
    return [str(p) for p in dataset_inputs(config["datasets"][dataset])]


def job_flops(spec: dict) -> float:
    """The compute of a train job, 6·N·D with D the tokens the job itself trains (a ladder's trunk segment or
    cooldown: its own steps, :func:`scaling.train.ladder.job_tokens`)."""
    return flops_6nd(count_params(Shape(**spec["shape"]))["n_params"], ladder.job_tokens(spec))


# The Snakemake priority of the jobs that score runs (tasks, export, evaluate): above every train job's
# (job_priority: log2 of its compute, below 128 for any study), so that a run is scored as soon as it has
# trained, while the others train, and a study does not end on all of its scoring at once.
SCORE_PRIORITY = 128


def job_priority(spec: dict) -> int:
    """A train job's Snakemake priority: log2 of its compute, so that of the jobs ready to run the longest start
    first (longest processing time first, Graham 1969) and a study does not wait at its end for its largest run."""
    return round(math.log2(max(job_flops(spec), 1.0)))  # a ladder's cooldown may train no step


def train_runtime_minutes(config: dict, spec: dict) -> int:
    """SLURM time limit of a train job: margin × 6·N·D / (throughput × GPUs), at least ``min_runtime_minutes``.

    N is counted from the run's shape, D is the tokens the job trains (a ladder's trunk segment or cooldown: its
    own steps, :func:`scaling.train.ladder.job_tokens`); the throughput (per GPU) is the study's
    ``cluster.train_flops_per_second``, the GPUs its ``engine.gpus_per_run``.
    """
    cluster = config["cluster"]
    rate = cluster["train_flops_per_second"] * config["engine"]["gpus_per_run"]
    seconds = cluster["runtime_margin"] * job_flops(spec) / rate
    return max(cluster["min_runtime_minutes"], math.ceil(seconds / 60))
