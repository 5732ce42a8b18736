import pytest

from scaling.study import ConfigError, Run, check, runs, spec_json

from conftest import smoke_config


def filled(config):
    """The smoke config as Snakemake's validation leaves it (training defaults filled)."""
    defaults = {"seq_len": 128, "batch_size": 16, "warmup_fraction": 0.05, "min_lr_ratio": 0.1, "weight_decay": 0.1,
                "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_tokens": 65536, "divergence_margin": 1.0}
    config["training"] = {**defaults, **config.get("training", {})}
    return config


def test_run_ids_come_from_values_not_positions():
    config = filled(smoke_config())
    before = {r.id: spec_json(config, r) for r in runs(config)}
    config["grid"][0]["learning_rates"].insert(0, 0.003)
    config["grid"].insert(0, {"sizes": ["m"], "token_multipliers": [5], "learning_rates": [0.1]})
    after = {r.id: spec_json(config, r) for r in runs(config)}
    assert set(before) < set(after)
    assert all(after[k] == v for k, v in before.items())
    assert Run("bible", "xs", 20.0, 0.01, 0).id == "bible/xs/M20_lr0.01_s0"


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
])
def test_check_names_the_field(edit, message):
    config = filled(smoke_config())
    edit(config)
    with pytest.raises(ConfigError) as e:
        check(config)
    assert message in str(e.value) and "fix" in str(e.value)
