import pandas as pd
import pytest

from scaling.fit.tables import canonical
from scaling.train.shapes import count_params
from scaling.io import spec_json
from scaling.study.runs import ConfigError, Run, Specs, check, model_sizes, run_id, run_spec, runs

from conftest import smoke_config


def filled(config):
    """The smoke config as Snakemake's validation leaves it (training and engine defaults filled)."""
    defaults = {"seq_len": 128, "batch_tokens": 2048, "schedule": "cosine", "warmup_fraction": 0.05,
                "min_lr_ratio": 0.1, "cooldown_fraction": 0.2, "cooldown_shape": "linear", "ladder": False,
                "z_loss": 0.0, "qk_layernorm": False,
                "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_tokens": 65536,
                "eval_every": 100, "curve_eval_tokens": 4096, "divergence_margin": 1.0}
    config["training"] = {**defaults, **config.get("training", {})}
    config["engine"] = {"checkpoint_every": 1000, "keep_checkpoints": False, "gpus_per_run": 1, "compile": True,
                        "tensorboard": False, **config.get("engine", {})}
    return config


def test_run_ids_come_from_values_not_positions():
    config = filled(smoke_config())
    before = {r.id: spec_json(run_spec(config, r)) for r in runs(config)}
    config["grid"][0]["learning_rates"].insert(0, 0.003)
    config["grid"].insert(0, {"sizes": ["m"], "token_multipliers": [5], "learning_rates": [0.1]})
    after = {r.id: spec_json(run_spec(config, r)) for r in runs(config)}
    assert set(before) < set(after)
    assert all(after[k] == v for k, v in before.items())
    assert Run("bible", "xs", 20.0, 0.01, 0).id == "bible/xs/M20_lr0.01_s0"
    assert run_id("web", "a", 20, seed=1) == "web/a/M20_s1"  # an imported run without a learning rate


def test_specs_on_demand_are_the_runs_specs_and_refuse_a_run_the_study_does_not_plan():
    config = filled(smoke_config())
    config["models"].append({"name": "big", "params": 30000})  # a shape from the sizing rule
    config["grid"].append({"sizes": ["big"], "token_multipliers": [20], "learning_rates": [0.01, 0.02]})
    specs = Specs(config)
    assert list(specs.runs) == [r.id for r in runs(config)]
    assert all(specs[r.id] == run_spec(config, r) for r in runs(config))
    with pytest.raises(ConfigError, match=r"bible/xs/M20_lr0.5_s0.*not a run of study 'smoke'; fix:"):
        specs["bible/xs/M20_lr0.5_s0"]


def test_overlapping_blocks_define_each_run_once():
    config = filled(smoke_config())
    config["grid"].append(dict(config["grid"][0]))
    assert len(runs(config)) == 6


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"].append(dict(c["models"][0])), "appear twice"),
    (lambda c: c["models"].append({"name": "odd", "d_model": 30, "n_layers": 1, "n_heads": 4}), "models[4] (odd)"),
    (lambda c: c["grid"][0].update(datasets=["nope"]), "grid[0].datasets[0]"),
    (lambda c: c["fit"].update(targets=[{"size": "zz", "token_multiplier": 20}]), "fit.targets[0].size"),
    (lambda c: c["datasets"].update(x={"source": "files"}), "datasets.x"),
    (lambda c: c["training"].update(batch_tokens=500), "training.batch_tokens"),
    (lambda c: c["models"].append({"params": 1e5, "d_model": 8}), "models[4]: give either `params`"),
    (lambda c: c["models"].append({"name": "p", "d_model": 8, "n_layers": 1}), "models[4] (p): missing ['n_heads']"),
    (lambda c: c["models"].append({"params": 1e3}), "models[4].params"),
    (lambda c: c["models"].append({"d_model": 8, "n_layers": 1, "n_heads": 1, "head_dim": 8}), "only apply with `params`"),
    (lambda c: c["datasets"]["bible"].update(tokenizer="bpe"), "datasets.bible.vocab_size"),
    (lambda c: c["datasets"]["bible"].update(vocab_size=512), "datasets.bible.vocab_size"),
    (lambda c: c["datasets"].update(t={"source": "tokens", "train": "a.npy", "vocab_size": 9}), "datasets.t.val"),
    (lambda c: c["datasets"].update(t={"source": "tokens", "train": "no.npy", "val": "no.npy", "vocab_size": 9}),
     "datasets.t.train: no file"),
    (lambda c: c["datasets"]["bible"].update(train="x.npy"), "datasets.bible.train"),
])
def test_check_names_the_field(edit, message):
    config = filled(smoke_config())
    edit(config)
    with pytest.raises(ConfigError) as e:
        check(config)
    assert message in str(e.value) and "fix" in str(e.value)


def test_a_size_given_as_a_parameter_count_gets_the_shape_of_the_rule():
    config = filled(smoke_config())
    config["models"].append({"params": 1e5, "aspect_ratio": 16, "head_dim": 16})
    config["grid"][0]["sizes"].append("n100000")
    check(config)
    spec = run_spec(config, Run("bible", "n100000", 20.0, 0.01, 0))
    assert spec["shape"] == {"d_model": 48, "n_layers": 3, "n_heads": 3, "ff_ratio": 4.0, "vocab_size": 256,
                             "seq_len": 64, "qk_layernorm": False}
    assert model_sizes(config)["n100000"] == 100_272
    assert spec["tokens"] == 20 * 100_272


def test_the_vocabulary_and_qk_layernorm_enter_the_shape_and_engine_settings_stay_out_of_the_spec():
    config = filled(smoke_config())
    config["datasets"]["bible"].update(tokenizer="bpe", vocab_size=1024)
    config["training"]["qk_layernorm"] = True
    run = Run("bible", "xs", 20.0, 0.01, 0)
    spec = run_spec(config, run)
    assert spec["shape"]["vocab_size"] == 1024 and spec["shape"]["qk_layernorm"]
    assert spec["tokens"] == 20 * model_sizes(config)["xs"]
    before = spec_json(run_spec(config, run))
    config["engine"].update(checkpoint_every=7, keep_checkpoints=True, compile=False, tensorboard=True)
    assert spec_json(run_spec(config, run)) == before and "engine" not in spec


def test_a_runs_planned_tokens_are_the_tokens_the_fits_derive_from_its_multiplier():
    config = filled(smoke_config())
    run = Run("bible", "xs", 7.3, 0.01, 0)  # M·N is not a whole number of tokens
    n, planned = model_sizes(config)["xs"], run_spec(config, run)["tokens"]
    assert planned == round(7.3 * n) != 7.3 * n and isinstance(planned, int)
    fitted = canonical(pd.DataFrame({"n_params": [n], "token_multiplier": [7.3], "val_loss": [3.0]}))
    assert fitted.loc[0, "tokens"] == planned and fitted.loc[0, "flops"] == 6 * n * planned


def test_a_size_with_its_own_batch_trains_on_it_and_the_others_keep_the_studys():
    config = filled(smoke_config())
    before = {r.id: spec_json(run_spec(config, r)) for r in runs(config)}
    config["models"][-1]["batch_tokens"] = 4 * config["training"]["batch_tokens"]
    specs = {r.id: run_spec(config, r) for r in runs(config)}
    largest = config["models"][-1]["name"]
    for rid, spec in specs.items():
        own = spec["size"] == largest
        assert spec["training"]["batch_tokens"] == config["training"]["batch_tokens"] * (4 if own else 1)
        assert (spec_json(run_spec(config, next(r for r in runs(config) if r.id == rid))) == before[rid]) == (not own)
