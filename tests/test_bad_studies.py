"""Bad study files fail before any job, naming the field (or the file and line) and the fix.

Most cases call the Snakefile's loader, :func:`scaling.study.config.load`, in process; a handful run
``snakemake -n`` end to end and check that no job ran, no injected command ran, and nothing was written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from scaling.fit.fit_set import points_needed
from scaling.study import runs as S
from scaling.train.model import Shape
from scaling.study.config import load, training_memory

from conftest import SMOKE, SNAKEMAKE, smoke_config

INJECT = ";touch PWNED;"


def models(c, i=0):
    return c["models"][i]


def add_model(c, **model):
    """A fifth model, trained in the first grid block."""
    c["models"].append(model)
    c["grid"][0]["sizes"].append(S.model_name(model))


def text_dataset(c, tmp, text: bytes, **extra):
    (tmp / "corpus").mkdir(exist_ok=True)
    (tmp / "corpus" / "a.txt").write_bytes(text)
    c["datasets"]["mine"] = {"source": "files", "files": [str(tmp / "corpus" / "*.txt")], **extra}


def token_dataset(c, tmp, train: np.ndarray, name="t.npy", **extra):
    np.save(tmp / name, train) if name.endswith(".npy") else train.tofile(tmp / name)
    np.save(tmp / "v.npy", np.arange(1000) % 50)
    c["datasets"]["t"] = {"source": "tokens", "train": str(tmp / name), "val": str(tmp / "v.npy"),
                          "vocab_size": 50, **extra}
    c["fit"]["targets"] = []  # a target `size` has another N on each vocabulary


def task_file(c, tmp, lines: list, name="mine"):
    (tmp / "task.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    c["downstream"]["tasks"][name] = {"path": str(tmp / "task.jsonl")}


SMOKE_TEXT = SMOKE.read_text()
SMOKE_LINES = SMOKE_TEXT.splitlines()
GOOD = {"context": "In the beginning", "choices": [" God", " man"], "gold": 0}

# (id, edit(config, tmp) -> None, or the file's text instead, the field the message names)
BAD = [
    # names that become paths or parts of commands: shell metacharacters and ../ in every name field
    ("study-inject", lambda c, t: c.update(study="x" + INJECT), "study"),
    ("study-parent", lambda c, t: c.update(study="../escape"), "study"),
    ("study-dotdot", lambda c, t: c.update(study=".."), "study"),
    ("study-dash", lambda c, t: c.update(study="-rf"), "study"),
    ("study-too-long", lambda c, t: c.update(study="s" * 101), "study"),
    ("study-not-a-string", lambda c, t: c.update(study=7), "study"),
    ("dataset-inject", lambda c, t: c.update(datasets={"d" + INJECT + "e": {"source": "embedded"}}), "datasets"),
    ("dataset-parent", lambda c, t: c.update(datasets={"../d": {"source": "embedded"}}), "datasets"),
    ("dataset-subshell", lambda c, t: c.update(datasets={"$(touch PWNED)": {"source": "embedded"}}), "datasets"),
    ("dataset-number-key", lambda c, t: c.update(datasets={2024: {"source": "embedded"}}), "datasets"),
    ("model-inject", lambda c, t: models(c).update(name="xs" + INJECT), "models[0].name"),
    ("model-parent", lambda c, t: models(c).update(name="../../m"), "models[0].name"),
    ("model-space", lambda c, t: models(c).update(name="a b"), "models[0].name"),
    ("model-derived-name", lambda c, t: c["models"].append({"d_model": 16, "n_layers": 1, "n_heads": 2,
                                                            "ff_ratio": 1e20}), "models[4]"),
    ("task-inject", lambda c, t: c["downstream"]["tasks"].update({"x" + INJECT + "y": {"builtin": "spelling"}}),
     "downstream.tasks"),
    ("task-escape", lambda c, t: c["downstream"]["tasks"].update({"../../../../escape": {"builtin": "spelling"}}),
     "downstream.tasks"),
    ("task-set-inject", lambda c, t: c["downstream"]["task_sets"].update({"core`touch PWNED`": ["spelling"]}),
     "downstream.task_sets"),
    ("task-set-parent", lambda c, t: c["downstream"]["task_sets"].update({"../set": ["spelling"]}),
     "downstream.task_sets"),
    ("task-set-member", lambda c, t: c["downstream"]["task_sets"]["core"].append("../x"),
     "downstream.task_sets.core[2]"),
    ("grid-dataset-parent", lambda c, t: c["grid"][0].update(datasets=["../bible"]), "grid[0].datasets[0]"),
    ("grid-size-inject", lambda c, t: c["grid"][0]["sizes"].append("xs" + INJECT), "grid[0].sizes[4]"),
    ("downstream-task-inject", lambda c, t: c["fit"].update(downstream_task="core" + INJECT),
     "fit.downstream_task"),
    ("fit-on-size-inject", lambda c, t: c["fit"].update(fit_on=[{"size": "xs|touch PWNED"}]), "fit.fit_on[0].size"),
    ("target-size-parent", lambda c, t: c["fit"]["targets"][0].update(size="../l"), "fit.targets[0].size"),
    # numbers: NaN, infinities, whole numbers, numbers YAML reads as text, ranges
    ("lr-nan", lambda c, t: c["grid"][0].update(learning_rates=[float("nan")]), "grid[0].learning_rates[0]"),
    ("lr-zero", lambda c, t: c["grid"][0].update(learning_rates=[0]), "grid[0].learning_rates[0]"),
    ("m-inf", lambda c, t: c["grid"][1].update(token_multipliers=[float("inf")]), "grid[1].token_multipliers[0]"),
    ("m-negative", lambda c, t: c["grid"][1].update(token_multipliers=[-20]), "grid[1].token_multipliers[0]"),
    ("warmup-nan", lambda c, t: c["training"].update(warmup_fraction=float("nan")), "training.warmup_fraction"),
    ("z-loss-inf", lambda c, t: c["training"].update(z_loss=float("inf")), "training.z_loss"),
    ("margin-negative-inf", lambda c, t: c["training"].update(divergence_margin=float("-inf")),
     "training.divergence_margin"),
    ("val-fraction-nan", lambda c, t: text_dataset(c, t, b"word\n" * 4000, val_fraction=float("nan")),
     "datasets.mine.val_fraction"),
    ("params-inf", lambda c, t: add_model(c, name="p", params=float("inf")), "models[4].params"),
    ("params-as-text", lambda c, t: add_model(c, name="p", params="1e6"), "models[4].params"),
    ("target-n-nan", lambda c, t: c["fit"].update(targets=[{"n_params": float("nan"), "token_multiplier": 20}]),
     "fit.targets[0].n_params"),
    ("fit-on-m-nan", lambda c, t: c["fit"].update(fit_on=[{"token_multiplier": float("nan")}]),
     "fit.fit_on[0].token_multiplier"),
    ("throughput-inf", lambda c, t: c.update(cluster={"train_flops_per_second": float("inf")}),
     "cluster.train_flops_per_second"),
    ("gpu-memory-nan", lambda c, t: c.update(cluster={"gpu_memory_gb": float("nan")}), "cluster.gpu_memory_gb"),
    ("d-model-float", lambda c, t: models(c).update(d_model=16.0), "models[0].d_model"),
    ("seq-len-fraction", lambda c, t: c["training"].update(seq_len=64.5), "training.seq_len"),
    ("seed-inf", lambda c, t: c["grid"][0].update(seeds=[float("inf")]), "grid[0].seeds[0]"),
    ("seed-negative", lambda c, t: c["grid"][0].update(seeds=[-1]), "grid[0].seeds[0]"),
    ("batch-beyond-int64", lambda c, t: c["training"].update(batch_tokens=2**70), "training.batch_tokens"),
    ("level-one", lambda c, t: c["fit"].update(level=1.0), "fit.level"),
    ("bootstrap-negative", lambda c, t: c["fit"].update(bootstrap=-1), "fit.bootstrap"),
    ("examples-too-few", lambda c, t: c["downstream"].update(examples=5), "downstream.examples"),
    ("gpus-zero", lambda c, t: c.update(engine={"gpus_per_run": 0}), "engine.gpus_per_run"),
    # runs that cannot train: no step after warmup, a batch that does not split, beyond memory
    ("m-zero-tokens", lambda c, t: c["grid"][1].update(token_multipliers=[1e-6]), "grid[1].token_multipliers[0]"),
    ("m-zero-tokens-first-block", lambda c, t: c["grid"][0]["token_multipliers"].append(1e-5),
     "grid[0].token_multipliers[1]"),
    ("m-beyond-memory", lambda c, t: c["grid"][1].update(token_multipliers=[1e300]), "grid[1].token_multipliers[0]"),
    ("time-limit-overflow", lambda c, t: c.update(cluster={"runtime_margin": 1e300}), "cluster"),
    ("throughput-underflow", lambda c, t: c.update(cluster={"train_flops_per_second": 1e-300}), "cluster"),
    ("bootstrap-beyond-memory", lambda c, t: c["fit"].update(bootstrap=10**15), "fit.bootstrap"),
    ("batch-not-multiple", lambda c, t: c["training"].update(batch_tokens=500), "training.batch_tokens"),
    ("batch-over-processes", lambda c, t: c.update(engine={"gpus_per_run": 3}), "engine.gpus_per_run"),
    ("shape-beyond-memory", lambda c, t: add_model(c, name="huge", d_model=65536, n_layers=256, n_heads=512),
     "models[4] (huge)"),
    ("params-beyond-memory", lambda c, t: add_model(c, name="huge", params=1e13), "models[4] (huge)"),
    ("batch-beyond-memory", lambda c, t: c["training"].update(batch_tokens=2**40), "training.batch_tokens"),
    ("model-batch-not-multiple", lambda c, t: models(c, 1).update(batch_tokens=500), "models[1].batch_tokens"),
    ("model-batch-not-integer", lambda c, t: models(c, 1).update(batch_tokens=512.5), "models[1].batch_tokens"),
    ("model-batch-beyond-memory", lambda c, t: models(c, 1).update(batch_tokens=2**40), "models[1].batch_tokens"),
    ("gpu-too-small", lambda c, t: c.update(cluster={"gpu_memory_gb": 0.001}), "cluster.gpu_memory_gb"),
    ("heads-not-dividing", lambda c, t: add_model(c, name="odd", d_model=30, n_layers=1, n_heads=4), "models[4] (odd)"),
    ("ff-width-zero", lambda c, t: add_model(c, name="thin", d_model=16, n_layers=1, n_heads=2, ff_ratio=0.01),
     "models[4].ff_ratio"),
    ("params-and-shape", lambda c, t: add_model(c, name="p", params=1e5, d_model=8), "models[4] (p)"),
    # corpora: empty files, splits smaller than a window, unreadable token arrays
    ("corpus-empty-file", lambda c, t: (text_dataset(c, t, b"word\n" * 4000), (t / "corpus" / "b.txt").touch()),
     "datasets.mine.files"),
    ("corpus-tiny", lambda c, t: text_dataset(c, t, b"ten bytes\n"), "datasets.mine"),
    ("corpus-binary", lambda c, t: text_dataset(c, t, b"\x7fELF\x02\x01\x01\x00" + b"word\n" * 4000),
     "datasets.mine.files"),
    ("corpus-latin-1", lambda c, t: text_dataset(c, t, "café\n".encode("latin-1") * 4000),
     "datasets.mine.files"),
    ("corpus-val-too-small", lambda c, t: text_dataset(c, t, b"word\n" * 4000, val_fraction=0.001),
     "datasets.mine"),
    ("corpus-bpe-tiny", lambda c, t: (text_dataset(c, t, b"tiny\n" * 5, tokenizer="bpe", vocab_size=300),
                                      c["fit"].update(targets=[])), "datasets.mine"),
    ("corpus-no-match", lambda c, t: c["datasets"].update(mine={"source": "files", "files": [str(t / "no/*.txt")]}),
     "datasets.mine.files"),
    ("embedded-shorter-than-window", lambda c, t: c.update(
        training={"seq_len": 700_000, "batch_tokens": 700_000},
        grid=[{"sizes": ["xs"], "token_multipliers": [20], "learning_rates": [0.01]}]), "datasets.bible"),
    ("tokens-tiny", lambda c, t: (token_dataset(c, t, np.arange(10) % 50), c.update(downstream={})), "datasets.t"),
    ("tokens-2d", lambda c, t: (token_dataset(c, t, np.zeros((100, 100), np.int64)), c.update(downstream={})),
     "datasets.t"),
    ("tokens-empty-bin", lambda c, t: (token_dataset(c, t, np.zeros(0, np.uint16), name="t.bin"),
                                       c.update(downstream={})), "datasets.t"),
    ("tokens-missing", lambda c, t: c["datasets"].update(t={"source": "tokens", "train": "no.npy", "val": "no.npy",
                                                           "vocab_size": 9}), "datasets.t.train"),
    # downstream tasks
    ("task-not-json", lambda c, t: task_file(c, t, ["{not json"]), "downstream.tasks.mine.path"),
    ("task-empty", lambda c, t: task_file(c, t, []), "downstream.tasks.mine.path"),
    ("task-gold-out-of-range", lambda c, t: task_file(c, t, [{**GOOD, "gold": 5}]), "downstream.tasks.mine.path"),
    ("task-choice-longer-than-window", lambda c, t: task_file(c, t, [{**GOOD, "choices": [" a", " b" * 40]}]),
     "downstream.tasks.mine.path"),
    ("task-missing-file", lambda c, t: c["downstream"]["tasks"].update(mine={"path": str(t / "no.jsonl")}),
     "downstream.tasks.mine.path"),
    ("task-builtin-and-path", lambda c, t: c["downstream"]["tasks"].update(
        mine={"builtin": "spelling", "path": "x.jsonl"}), "downstream.tasks.mine"),
    ("task-on-tokens", lambda c, t: token_dataset(c, t, np.arange(5000) % 50), "downstream.tasks.spelling"),
    ("task-unknown-builtin", lambda c, t: c["downstream"]["tasks"].update(mine={"builtin": "cloze"}),
     "downstream.tasks.mine.builtin"),
    # fit sets and targets
    ("fit-on-no-run", lambda c, t: c["fit"].update(fit_on=[{"token_multiplier": 20}, {"size": "l",
                                                                                     "token_multiplier": 80}]),
     "fit.fit_on[1]"),
    ("fit-on-empty", lambda c, t: c["fit"].update(fit_on=[]), "fit.fit_on"),
    ("fit-on-empty-filter", lambda c, t: c["fit"].update(fit_on=[{}]), "fit.fit_on[0]"),
    ("fit-on-unknown-size", lambda c, t: c["fit"].update(fit_on=[{"size": "nope"}]), "fit.fit_on[0].size"),
    ("fit-on-misses-a-dataset", lambda c, t: (
        text_dataset(c, t, b"word\n" * 4000),
        c["grid"][0].update(datasets=["bible"]),
        c["grid"].append({"datasets": ["mine"], "sizes": ["s"], "token_multipliers": [20], "learning_rates": [0.01]}),
        c["grid"][1].update(datasets=["bible"]),
        c["fit"].update(fit_on=[{"size": "xs"}])), "fit.fit_on: no filter matches a planned run on dataset 'mine'"),
    ("fit-set-too-small", lambda c, t: c["fit"].update(fit_on=[{"token_multiplier": 20}]),
     "fit.fit_on: the fit set on dataset 'bible' holds 4 distinct (N, M) point(s)"),
    ("default-fit-set-too-small", lambda c, t: c["grid"][0].update(sizes=["xs", "s", "m"]),
     "fit.fit_on: the fit set on dataset 'bible' (the default"),
    ("target-unknown-size", lambda c, t: c["fit"]["targets"][0].update(size="xxl"), "fit.targets[0].size"),
    ("target-size-and-n", lambda c, t: c["fit"]["targets"][0].update(n_params=1e6), "fit.targets[0]"),
    ("target-without-m", lambda c, t: c["fit"].update(targets=[{"size": "l"}]), "fit.targets[0]"),
    ("downstream-task-unknown", lambda c, t: c["fit"].update(downstream_task="nope"), "fit.downstream_task"),
    # the file itself: YAML syntax, keys given twice (YAML keeps the last), templates, not a mapping
    ("duplicate-top-level-key", lambda c, t: SMOKE_TEXT + "training: {seq_len: 32}\n",
     f"line {len(SMOKE_LINES) + 1}: training: the key is given twice (first at line "
     f"{SMOKE_LINES.index('training:') + 1})"),
    ("duplicate-nested-key", lambda c, t: SMOKE_TEXT.replace("  bible: {source: embedded}",
                                                             "  bible:\n    source: embedded\n    source: files"),
     "datasets.bible.source: the key is given twice"),
    ("duplicate-list-item-key", lambda c, t: SMOKE_TEXT.replace("  - sizes: [xs, s, m, l]\n",
                                                                "  - sizes: [xs, s, m, l]\n    sizes: [xs]\n"),
     "grid[0].sizes: the key is given twice"),
    ("syntax-unclosed-bracket", lambda c, t: SMOKE_TEXT.replace("[xs, s, m, l]", "[xs, s, m, l"), "study.yaml, line "),
    ("syntax-tab", lambda c, t: SMOKE_TEXT.replace("  seq_len", "\tseq_len"),
     f"line {SMOKE_LINES.index('  seq_len: 64') + 1}, column 1"),
    ("syntax-no-space-after-colon", lambda c, t: "study:smoke\ndatasets: {}\n", "study.yaml"),
    ("yte-template", lambda c, t: "__use_yte__: true\n" + SMOKE_TEXT, "__use_yte__"),
    ("python-tag", lambda c, t: SMOKE_TEXT.replace("study: smoke", "study: !!python/object/apply:os.system [ls]"),
     f"line {SMOKE_LINES.index('study: smoke') + 1}"),
    ("not-a-mapping", lambda c, t: "- study: smoke\n", "study.yaml"),
    ("empty-file", lambda c, t: "", "study.yaml"),
    ("unknown-key", lambda c, t: c.update(colour="blue"), "colour"),
    # the ladder: a WSD schedule, a cooldown fraction in (0, 1), branch points after the warmup
    ("ladder-not-wsd", lambda c, t: c["training"].update(ladder=True), "training.schedule: wsd"),
    ("ladder-no-cooldown", lambda c, t: c["training"].update(ladder=True, schedule="wsd", cooldown_fraction=0,
                                                             warmup_steps=2), "training.cooldown_fraction: 0 leaves"),
    ("ladder-all-cooldown", lambda c, t: c["training"].update(ladder=True, schedule="wsd", cooldown_fraction=1,
                                                              warmup_steps=2), "training.cooldown_fraction: 1 leaves"),
    ("ladder-warmup-fraction", lambda c, t: c["training"].update(ladder=True, schedule="wsd"),
     "training.ladder: a ladder's trunk and runs share one warmup"),
    ("ladder-branch-in-warmup", lambda c, t: c["training"].update(ladder=True, schedule="wsd", warmup_steps=140),
     "training.warmup_steps: bible/xs/M10_lr0.01_s0 would branch off its trunk bible/xs/trunk_lr0.01_s0 at step"),
    ("warmup-steps-fraction", lambda c, t: c["training"].update(warmup_steps=2.5), "training.warmup_steps"),
    ("warmup-steps-negative", lambda c, t: c["training"].update(warmup_steps=-1), "training.warmup_steps"),
    ("warmup-steps-whole-run", lambda c, t: c["training"].update(warmup_steps=10**6),
     "grid[0].token_multipliers[0]: M = 20 gives xs"),
    ("cooldown-shape-unknown", lambda c, t: c["training"].update(cooldown_shape="cosine"),
     "training.cooldown_shape"),
]


def study_file(tmp: Path, edit) -> Path:
    config = smoke_config()
    text = edit(config, tmp)
    path = tmp / "study.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_study_too_small_to_fit_is_refused_to_snakemake_but_read_by_status_and_plan(tmp_path, capsys):
    from scaling.cli import main

    path = study_file(tmp_path, lambda c, t: c["fit"].update(fit_on=[{"token_multiplier": 20}]))
    with pytest.raises(S.ConfigError, match="holds 4 distinct"):
        load([path])
    assert load([path], fittable=False)["study"] == "smoke"  # the small start a plan is to grow
    main(["status", "--configfile", str(path), "--results", str(tmp_path / "results")])
    assert "runs planned" in capsys.readouterr().out
    main(["plan", "--configfile", str(path), "--results", str(tmp_path / "results"), "--target", "l:160",
          "--budget", "1e12", "--token-multipliers", "20,40,80,160", "--out", str(tmp_path / "plan.yaml")])
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["grid"]


def test_a_number_written_as_text_is_shown_written_as_yaml_reads_a_number(tmp_path):
    with pytest.raises(S.ConfigError, match=r"write 1.25e6 as YAML reads a number: 1250000.0 or 1250000 \("):
        load([study_file(tmp_path, lambda c, t: add_model(c, name="p", params="1.25e6"))])
    with pytest.raises(S.ConfigError, match=r"write 1e-7 as YAML reads a number: 1.0e-07\b"):
        load([study_file(tmp_path, lambda c, t: c["grid"][0].update(learning_rates=["1e-7"]))])
    with pytest.raises(S.ConfigError, match=r"'nan' is text, not a number; fix: give a finite number"):
        load([study_file(tmp_path, lambda c, t: c["grid"][0].update(learning_rates=["nan"]))])


def test_there_are_at_least_60_bad_studies():
    assert len(BAD) >= 60 and len({case[0] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("edit, field", [pytest.param(e, f, id=i) for i, e, f in BAD])
def test_a_bad_study_fails_in_the_loader_naming_the_field_and_the_fix(tmp_path, edit, field):
    path = study_file(tmp_path, edit)
    with pytest.raises(S.ConfigError) as e:
        load([path])
    message = str(e.value)
    assert field in message and "fix:" in message, message
    assert "\n" not in message
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "results").exists()


@pytest.mark.parametrize("edit, check", [
    pytest.param(lambda c, t: c.update(title="a; touch PWNED $(touch PWNED) `touch PWNED` 'q' \"q\""),
                 lambda c: c["title"].startswith("a; touch"), id="title-with-metacharacters"),
    pytest.param(lambda c, t: add_model(c, name="s-1.5_b", d_model=16, n_layers=1, n_heads=2),
                 lambda c: "bible/s-1.5_b/M20_lr0.01_s0" in [r.id for r in S.runs(c)], id="name-dots-dashes"),
    pytest.param(lambda c, t: c["grid"][1].update(token_multipliers=[0.00012, 40]),
                 lambda c: S.run_spec(c, S.Run("bible", "xs", 0.00012, 0.01, 0))["tokens"] == 1,
                 id="smallest-m-that-trains"),
    pytest.param(lambda c, t: c["fit"].update(targets=[{"size": "m", "token_multiplier": 80},
                                                       {"n_params": 1e9, "token_multiplier": 20}]),
                 lambda c: len(c["fit"]["targets"]) == 2, id="untrained-targets"),
    pytest.param(lambda c, t: c["fit"].update(fit_on=[{"size": ["xs", "s", "m", "l"], "token_multiplier": [20, 40]}]),
                 lambda c: c["fit"]["fit_on"][0]["size"] == ["xs", "s", "m", "l"], id="fit-on-lists"),
    pytest.param(lambda c, t: SMOKE_TEXT.replace("models:\n", "models:\n  - &tiny {name: t, d_model: 16, n_layers: 1,"
                                                              " n_heads: 2}\n  - {<<: *tiny, name: t2}\n"),
                 lambda c: [m["name"] for m in c["models"][:2]] == ["t", "t2"], id="yaml-merge-key"),
    pytest.param(lambda c, t: text_dataset(c, t, ("word " * 8 + "\n").encode() * 200),
                 lambda c: c["datasets"]["mine"]["val_fraction"] == 0.05, id="small-but-sufficient-corpus"),
    pytest.param(lambda c, t: task_file(c, t, [GOOD, {**GOOD, "gold": 1}]),
                 lambda c: "mine" in c["downstream"]["tasks"], id="task-file"),
    pytest.param(lambda c, t: c["training"].update(batch_tokens=1536, seq_len=64) or c.update(
        engine={"gpus_per_run": 3}), lambda c: c["engine"]["gpus_per_run"] == 3, id="batch-splits-over-processes"),
    pytest.param(lambda c, t: c["training"].update(ladder=True, schedule="wsd", cooldown_fraction=0.9,
                                                   warmup_steps=10),
                 lambda c: c["training"]["ladder"] and min(p.branch_steps[0] - 10
                                                           for _, p in S.ladders(c).values()) < 10,
                 id="ladder-branching-soon-after-warmup"),
])
def test_an_unusual_but_sound_study_is_accepted(tmp_path, edit, check):
    config = load([study_file(tmp_path, edit)])
    assert check(config)
    assert config["training"]["warmup_fraction"] == 0.05  # defaults filled


def test_a_fit_set_too_small_for_the_loss_law_names_the_study_s_own_token_multipliers(tmp_path):
    """No M = 20 run: the default fit set is the smallest model at its largest M, one point; the fix asks for sizes
    at the M the study trains, and names the planned points fit.fit_on could take in."""
    def edit(c, t):
        c["grid"][0].update(token_multipliers=[10])
        c["grid"][1].update(token_multipliers=[5])
    with pytest.raises(S.ConfigError) as e:
        load([study_file(tmp_path, edit)])
    message, fix = str(e.value), str(e.value).split("fix: ")[1]
    assert message.startswith("fit.fit_on: ") and f"needs at least {points_needed('overtraining')};" in message
    assert fix == ("add 4 model size(s) of other N at M = 10 to the grid, or widen fit.fit_on to take in more of the "
                   "planned points (l at M = 10, m at M = 10, s at M = 10, xs at M = 5)"), fix


def test_later_files_override_earlier_ones_and_each_is_read_strictly(tmp_path):
    base = tmp_path / "study.yaml"
    base.write_text(SMOKE_TEXT)
    override = tmp_path / "override.yaml"
    override.write_text("training: {seq_len: 32}\n")
    assert load([base, override])["training"]["seq_len"] == 32
    override.write_text("training: {seq_len: 32}\ntraining: {seq_len: 16}\n")
    with pytest.raises(S.ConfigError, match="override.yaml, line 2: training: the key is given twice"):
        load([base, override])


@pytest.mark.slow
def test_the_memory_bound_is_below_the_measured_peak_of_a_training_step(tmp_path):
    shape, tokens = Shape(d_model=128, n_layers=2, n_heads=2, seq_len=128), 16384
    probe = textwrap.dedent(f"""
        import resource, torch
        from scaling.train.model import GPT, Shape, lm_loss
        torch.set_num_threads(1)
        x = torch.randint(0, 256, ({tokens // 128}, 129))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = GPT(Shape(d_model=128, n_layers=2, n_heads=2, seq_len=128))
        opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, fused=True)
        for _ in range(2):
            lm_loss(model(x[:, :-1]), x[:, 1:])[1].backward()
            opt.step()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    peak = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    state, activations = training_memory(shape, tokens, gpu=False)
    assert 0.15 * peak < state + activations < peak  # a lower bound, and not a vacuous one


# -- end to end: snakemake -n on a representative handful ---------------------------------------------------------
def dry_run(workdir: Path, path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--configfile", str(path), "--dry-run", "--printshellcmds", *args],
                          cwd=workdir, capture_output=True, text=True)


E2E = ["dataset-inject", "task-inject", "task-escape", "model-parent", "lr-nan", "m-zero-tokens",
       "duplicate-nested-key", "shape-beyond-memory"]


@pytest.mark.workflow
@pytest.mark.parametrize("edit, field", [pytest.param(e, f, id=i) for i, e, f in BAD if i in E2E])
def test_snakemake_stops_a_bad_study_before_any_job_and_runs_nothing(tmp_path, edit, field):
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = dry_run(workdir, study_file(tmp_path, edit))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and field in out and "fix:" in out, out
    assert "error in the study: " in out and 'File "' not in out  # one line, no traceback
    assert "Job stats" not in out and "Shell command" not in out
    assert not list(tmp_path.rglob("PWNED*")) and not list(tmp_path.rglob("escape*"))
    assert {p.name for p in workdir.iterdir()} <= {".snakemake"}  # nothing written but Snakemake's own state


@pytest.mark.workflow
def test_snakemake_quotes_every_value_of_a_shell_line(tmp_path):
    config = smoke_config()
    config["title"] = "a; touch PWNED $(touch PWNED)"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = dry_run(tmp_path, path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " -m scaling.cli " in line]
    assert {line.split(" -m scaling.cli ")[1].split()[0] for line in lines} == {
        "prepare", "train", "tasks", "evaluate", "collect", "fit-study", "database", "report"}
    assert "--title 'a; touch PWNED $(touch PWNED)'" in proc.stdout
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_a_real_run_writes_only_under_results_of_its_study(finished_smoke):
    top = {p.name for p in finished_smoke.iterdir()}
    assert top == {"study.yaml", "results", ".snakemake"}
    assert [p.name for p in (finished_smoke / "results").iterdir()] == ["smoke"]
