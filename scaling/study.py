"""A study: its checked config and the runs it defines.

The config's structure is validated by Snakemake against
``workflow/schemas/config.schema.yaml`` (which also fills defaults); this module
checks what a schema cannot (names that must refer to each other, files that
must exist) and expands the grid into runs.

A run is identified by the values that define it — dataset, model name, token
multiplier M, learning rate, seed — never by its position in a list, so adding
to the grid leaves existing runs' ids and paths unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

from scaling.data import resolve_files
from scaling.model import Shape, count_params


class ConfigError(ValueError):
    """A study config that cannot run; the message names the field and the fix."""


def model_name(model: dict) -> str:
    if "name" in model:
        return model["name"]
    name = f"d{model['d_model']}-L{model['n_layers']}-H{model['n_heads']}"
    ff = model.get("ff_ratio", 4.0)
    return name if ff == 4.0 else f"{name}-ff{ff:g}"


def shape_of(model: dict, training: dict) -> Shape:
    return Shape(
        d_model=model["d_model"],
        n_layers=model["n_layers"],
        n_heads=model["n_heads"],
        ff_ratio=float(model.get("ff_ratio", 4.0)),
        vocab_size=256,
        seq_len=training["seq_len"],
    )


def fmt(x: float) -> str:
    """A number as it appears in run ids: shortest round-tripping form (20, 0.003, 1e-05)."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(float(x))


@dataclass(frozen=True)
class Run:
    dataset: str
    size: str
    token_multiplier: float
    lr: float
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.size}/M{fmt(self.token_multiplier)}_lr{fmt(self.lr)}_s{self.seed}"


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(top level)"


def explain_schema_error(error: Exception, schema_path: str) -> ConfigError:
    """A one-line :class:`ConfigError` for a failed schema validation (Snakemake's ``validate`` error).

    It names the offending field and, as the fix, the allowed keys or the
    nearest description along the schema path.
    """
    import jsonschema
    import yaml

    cause = error.__cause__ or error.__context__  # Snakemake raises inside `except ValidationError`
    if not isinstance(cause, jsonschema.ValidationError):
        return ConfigError(str(error))
    if cause.validator == "additionalProperties":
        known = sorted(cause.schema.get("properties", {}))
        unknown = sorted(set(cause.instance) - set(known))
        field = _field([*cause.absolute_path, *unknown[:1]])
        return ConfigError(f"{field}: unknown key; fix: remove it" + (f", or use one of {known}" if known else ""))
    v = cause.validator_value
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
    }.get(cause.validator, "see workflow/schemas/config.schema.yaml")
    node, hint = yaml.safe_load(open(schema_path)), None
    for part in list(cause.absolute_schema_path)[:-1]:
        node = node[part]
        if isinstance(node, dict) and "description" in node:
            hint = " ".join(node["description"].split())
    return ConfigError(f"{_field(cause.absolute_path)}: {cause.message}; fix: {fix}" + (f" ({hint})" if hint else ""))


def check(config: dict) -> None:
    """Raise :class:`ConfigError` for what the schema cannot catch."""
    names = [model_name(m) for m in config["models"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"models: the name(s) {dupes} appear twice; fix: give each model a unique `name`")
    for i, m in enumerate(config["models"]):
        if m["d_model"] % m["n_heads"]:
            raise ConfigError(
                f"models[{i}] ({names[i]}): d_model={m['d_model']} is not divisible by n_heads={m['n_heads']}; "
                f"fix: choose n_heads that divides d_model"
            )
    for name, ds in config["datasets"].items():
        if ds["source"] == "files":
            if "files" not in ds:
                raise ConfigError(f"datasets.{name}: source is `files` but no `files` are listed; fix: add `files: [path/*.txt]`")
            for pattern in ds["files"]:
                if not resolve_files([pattern]):
                    raise ConfigError(
                        f"datasets.{name}.files: no file matches {pattern!r}; "
                        f"fix: give a path or glob, relative to the directory snakemake runs in, that exists"
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
            raise ConfigError(f"fit.targets[{i}]: give exactly one of `size` or `n_params`")


def runs(config: dict) -> list[Run]:
    """All runs of the study (the union of the grid blocks), in a stable order."""
    out = set()
    for block in config["grid"]:
        for ds, size, m, lr, seed in itertools.product(
            block.get("datasets") or list(config["datasets"]),
            block["sizes"],
            block["token_multipliers"],
            block["learning_rates"],
            block.get("seeds", [0]),
        ):
            out.add(Run(ds, size, float(m), float(lr), int(seed)))
    return sorted(out, key=lambda r: (r.dataset, r.size, r.token_multiplier, r.lr, r.seed))


def run_spec(config: dict, run: Run) -> dict:
    """Everything that defines a run's training (and nothing else), as a JSON-able dict."""
    model = next(m for m in config["models"] if model_name(m) == run.size)
    training = config["training"]
    shape = shape_of(model, training)
    n = count_params(shape)["n_params"]
    return {
        "run_id": run.id,
        "dataset": run.dataset,
        "size": run.size,
        "shape": shape.to_dict(),
        "token_multiplier": run.token_multiplier,
        "tokens": int(round(run.token_multiplier * n)),
        "lr": run.lr,
        "seed": run.seed,
        "training": dict(sorted(training.items())),
    }


def spec_json(config: dict, run: Run) -> str:
    return json.dumps(run_spec(config, run), sort_keys=True)


def model_sizes(config: dict) -> dict[str, int]:
    """Model name → N (all parameters)."""
    return {
        model_name(m): count_params(shape_of(m, config["training"]))["n_params"] for m in config["models"]
    }


def dataset_files(config: dict, dataset: str) -> list[str]:
    """The input files of a dataset (none for the embedded corpus), so edits to them re-prepare it."""
    ds = config["datasets"][dataset]
    return [str(p) for p in resolve_files(ds["files"])] if ds["source"] == "files" else []


def train_runtime_minutes(config: dict, spec: dict) -> int:
    """SLURM time limit of a train job: margin × 6·N·D / throughput, at least ``min_runtime_minutes``.

    N is counted from the run's shape; the throughput is the study's
    ``cluster.train_flops_per_second``.
    """
    cluster = config["cluster"]
    n = count_params(Shape(**spec["shape"]))["n_params"]
    seconds = cluster["runtime_margin"] * 6.0 * n * spec["tokens"] / cluster["train_flops_per_second"]
    return max(cluster["min_runtime_minutes"], math.ceil(seconds / 60))
