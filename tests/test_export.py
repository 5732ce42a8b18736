"""A run exported as a transformers GPT-2 model (scaling.evaluate.export): same logits, same tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scaling.cli import main
from scaling.data.tokenizer import BPETokenizer
from scaling.train.loop import save_model
from scaling.train.model import GPT, Shape

TEXT = "And God said, Let there be light: and there was light.\tNaïve café, Āx, 𝄞 \x00 end"


def make_run(root: Path, shape: Shape, tokenizer: str | None = "bytes") -> tuple[Path, GPT]:
    """A finished run in the study layout, results/s/runs/bible/xs/<run>, with weights far from their init."""
    run, data = root / "results/s/runs/bible/xs/M20_lr0.01_s0", root / "results/s/data/bible"
    run.mkdir(parents=True), data.mkdir(parents=True)
    torch.manual_seed(0)
    model = GPT(shape)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # LayerNorm gains and biases too: a wrong mapping of any one shows in the logits
    save_model(run / "model.pt", shape, model)
    (data / "meta.json").write_text(json.dumps({"tokenizer": tokenizer, "vocab_size": shape.vocab_size}))
    return run, model.eval()


def max_logit_error(model: GPT, hf: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(ids) - hf(ids).logits).abs().max().item()


@pytest.mark.slow
def test_a_byte_level_run_loads_in_transformers_with_the_same_logits_and_bytes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    shape = Shape(d_model=32, n_layers=3, n_heads=4, ff_ratio=3.0, seq_len=48)
    run, model = make_run(tmp_path, shape)
    main(["export", str(run), str(tmp_path / "hf")])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf) is GPT2LMHeadModel and hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == list(TEXT.encode("utf-8"))  # token i is byte i, for every byte, no special token matched
    assert tokenizer.decode(ids) == TEXT
    batch = torch.tensor([ids[: shape.seq_len], ids[-shape.seq_len:]])
    assert max_logit_error(model, hf, batch) <= 1e-5
    assert torch.nn.functional.cross_entropy(model(batch).flatten(0, 1), batch.flatten()).item() > 1  # not trivial


@pytest.mark.slow
def test_a_bpe_run_exports_its_trained_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shape = Shape(d_model=24, n_layers=2, n_heads=2, vocab_size=300, seq_len=32)
    run, model = make_run(tmp_path, shape, tokenizer="bpe")
    ours = BPETokenizer.train(("In the beginning God created the heaven and the earth. " * 50).encode(), 300)
    ours.save(run.parents[3] / "data/bible/tokenizer.json")
    main(["export", str(run), str(tmp_path / "hf")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "God created the heaven, and the earth was without form"
    assert tokenizer(text)["input_ids"] == ours.encode(text.encode()).tolist()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert max_logit_error(model, hf, ids) <= 1e-5


@pytest.mark.slow
def test_a_pre_tokenized_run_exports_without_a_tokenizer_and_reexport_replaces(tmp_path):
    from transformers import AutoModelForCausalLM

    shape = Shape(d_model=16, n_layers=1, n_heads=2, vocab_size=1000, seq_len=16)
    run, model = make_run(tmp_path, shape, tokenizer=None)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier export")
    main(["export", str(run), str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "results"]  # no temporary left beside it
    assert {p.name for p in out.iterdir()} == {"config.json", "generation_config.json", "model.safetensors"}
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert max_logit_error(model, hf, torch.randint(0, 1000, (2, 16))) <= 1e-5


@pytest.mark.parametrize("edit, message", [
    (lambda run: None, "qk_layernorm"),
    (lambda run: (run / "model.pt").unlink(), "no model.pt"),
    (lambda run: (run.parents[3] / "data/bible/meta.json").unlink(), "fix: give --data"),
])
def test_what_cannot_be_exported_is_named_with_the_fix(tmp_path, edit, message):
    run, _ = make_run(tmp_path, Shape(d_model=16, n_layers=1, n_heads=2, seq_len=16,
                                      qk_layernorm=message == "qk_layernorm"))
    edit(run)
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), str(tmp_path / "hf")])
    assert str(exit_.value.code).startswith("error: ") and message in str(exit_.value.code)
    assert not (tmp_path / "hf").exists()
