"""lm-evaluation-harness tasks as downstream tasks, scored offline on a run's exported model.

A study names a harness task by its name and the directory of its YAML files
(``downstream.tasks.<name> = {harness: <task>, include: <dir>}``). The harness
indexes that directory alone (``TaskManager(include_path=…,
include_defaults=False)``), and runs ``lm_eval.simple_evaluate`` on the run's
transformers export (:mod:`scaling.evaluate.export`) in fp32. Nothing is
downloaded: the task's ``dataset_path`` must be local (a directory, or a
packaged builder such as ``json`` with local ``dataset_kwargs.data_files``), the
Hugging Face hub and datasets run with ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` set, and their caches go to a temporary directory in
the run's directory, removed afterwards.

Only ``multiple_choice`` tasks are accepted, so that each gives a top-1
accuracy like the built-in tasks: ``acc`` (highest Σ log p) and ``acc_norm``
(per character of the choice, the harness's normalization; the built-in scorer
divides by bytes, the same for ASCII). The random baseline is the mean of
1 / (number of choices) over the scored documents. Token 0 (the NUL byte for
byte-level runs, the vocabulary's first token for BPE runs) prefixes an empty
context, as the exported tokenizer declares no special tokens.

:func:`check_task` is what the study loader asks before any job;
:func:`score_tasks` what the evaluate stage runs.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

EXTRA = "harness"  # the optional dependencies: pip install -e ".[harness]"
METRICS = ("acc", "acc_norm")
LOCAL_BUILDERS = ("json", "csv", "parquet", "arrow", "text")  # datasets' packaged builders, reading data_files


class HarnessError(ValueError):
    """A harness task that cannot be used; the message says why and the fix."""


def _task_manager(include: str | Path):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HarnessError(f"lm-evaluation-harness is not installed; fix: pip install -e \".[{EXTRA}]\"") from None
    if not Path(include).is_dir():
        raise HarnessError(f"no directory {str(include)!r} of task YAML files; fix: give `include`, the directory "
                           f"of the task's YAML (relative to the directory snakemake runs in)")
    return TaskManager(include_path=str(include), include_defaults=False)


def check_task(task: str, include: str | Path, metric: str) -> None:
    """Raise :class:`HarnessError` unless ``task`` is a multiple-choice task of ``include`` with local data that
    reports ``metric``."""
    index = _task_manager(include).task_index
    from lm_eval.tasks._index import Kind

    entry = index.get(task)
    if entry is None or entry.kind is not Kind.TASK:
        known = sorted(n for n, e in index.items() if e.kind is Kind.TASK)
        what = "no task" if entry is None else f"{entry.kind.name.lower()}, not a task,"
        raise HarnessError(f"{what} {task!r} in the task YAML files of {include} (tasks there: {known or 'none'}); "
                           f"fix: name one of them, or add its YAML there")
    cfg = entry.cfg or {}
    where = f"task {task!r} ({entry.yaml_path})"
    if cfg.get("output_type") != "multiple_choice":
        raise HarnessError(f"{where} has output_type {cfg.get('output_type')!r}; fix: use a multiple_choice task, "
                           f"which gives a top-1 accuracy")
    listed = [m.get("metric") for m in cfg.get("metric_list") or []]
    if listed and metric not in listed:
        raise HarnessError(f"{where} reports {listed}, not {metric}; fix: set metric to one of them, or add "
                           f"`- metric: {metric}` to its metric_list")
    path = str(cfg.get("dataset_path", ""))
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if path in LOCAL_BUILDERS:
        patterns = list(files.values()) if isinstance(files, dict) else [files] if isinstance(files, str) else files
        missing = [p for p in patterns or [None] if not isinstance(p, str) or not glob.glob(p)]
        if missing:
            raise HarnessError(f"{where}: dataset_path {path!r} reads dataset_kwargs.data_files, and "
                               f"{missing[0]!r} matches no file; fix: give the task's data files, relative to the "
                               f"directory snakemake runs in")
    elif not path or not Path(path).exists():
        raise HarnessError(f"{where}: dataset_path {path!r} is neither a local directory nor one of {LOCAL_BUILDERS} "
                           f"with local data_files, and nothing is downloaded; fix: save the data as JSON lines and "
                           f"set dataset_path: json, dataset_kwargs: {{data_files: {{test: FILE}}}}")


def score_tasks(model_dir: str | Path, tasks: dict[str, dict], scratch: str | Path, batch_size: int = 64) -> dict:
    """Scores of the exported model in ``model_dir`` on harness ``tasks`` ({name: {"harness", "include"}}).

    Returns {name: {"acc", "acc_norm", "n_examples", "random_baseline_accuracy"}}.
    ``scratch`` is a directory for the caches of the hub and datasets (a
    temporary directory in it, removed afterwards). Set the offline variables
    before anything imports ``datasets`` (a fresh process: ``scaling evaluate``).
    """
    import torch

    with tempfile.TemporaryDirectory(dir=scratch, prefix=".harness.") as cache:
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=cache,
                          HF_DATASETS_CACHE=str(Path(cache) / "datasets"))
        import lm_eval

        device = "cuda" if torch.cuda.is_available() else "cpu"
        out = {}
        for name, task in tasks.items():
            result = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32", "prefix_token_id": 0},
                tasks=[task["harness"]], task_manager=_task_manager(task["include"]), batch_size=batch_size,
                device=device, log_samples=True, bootstrap_iters=0)
            scores, samples = result["results"][task["harness"]], result["samples"][task["harness"]]
            out[name] = {**{m: scores.get(f"{m},none") for m in METRICS}, "n_examples": len(samples),
                         "random_baseline_accuracy": sum(1 / len(s["arguments"]) for s in samples) / len(samples)}
    return out
