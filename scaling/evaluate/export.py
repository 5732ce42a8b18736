"""A finished run as a Hugging Face ``transformers`` model: GPT-2 weights, config and tokenizer.

The project's decoder (:mod:`scaling.train.model`) is GPT-2's architecture, so a
run maps onto ``GPT2LMHeadModel`` exactly, without custom modelling code, by
these config settings and weight names:

- ``activation_function = "gelu"``: our MLP uses the exact (erf) GELU, not
  GPT-2's default tanh approximation ``gelu_new``;
- ``layer_norm_epsilon = 1e-5`` (PyTorch's LayerNorm default), no dropout,
  attention scaled by 1/√head_dim, output layer tied to the token embedding;
- ``n_positions = seq_len``, ``n_inner = d_ff``;
- GPT-2's ``Conv1D`` layers hold their weights as (in, out), the transpose of
  ``nn.Linear``'s; the fused q/k/v projection has the same layout in both.

Runs with ``qk_layernorm`` (a LayerNorm on each head's queries and keys) do not
map: GPT-2 has no such norm, and the transformers classes that have one use
rotary positions instead of our learned ones. Their export is refused.

The tokenizer is written as a ``tokenizers`` JSON that ``AutoTokenizer`` loads:
a byte-level run's is a BPE without merges whose 256 tokens are the bytes, in
byte order (token i is byte i, GPT-2's byte-to-character table naming them); a
BPE run's is its trained tokenizer. Neither has special tokens (runs train on
plain text), and none is declared: a declared one would be matched in raw text,
so that the character naming its byte would no longer encode as its UTF-8
bytes. A run on pre-tokenized data has no tokenizer to write.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from scaling.data.prepare import load_tokenizer
from scaling.data.tokenizer import BPETokenizer
from scaling.evaluate.scoring import load_model
from scaling.train.model import GPT, Shape

EXTRA = "hf"  # the optional dependencies export needs: pip install -e ".[hf]"


class ExportError(ValueError):
    """A run that cannot be exported; the message says why and the fix."""


def gpt2_config(shape: Shape) -> dict:
    """The ``GPT2Config`` arguments of a model of ``shape``."""
    if shape.qk_layernorm:
        raise ExportError("runs trained with training.qk_layernorm have a LayerNorm on queries and keys that GPT-2 "
                          "lacks, so they do not map onto a transformers model; fix: export runs trained without it")
    return {"vocab_size": shape.vocab_size, "n_positions": shape.seq_len, "n_embd": shape.d_model,
            "n_layer": shape.n_layers, "n_head": shape.n_heads, "n_inner": shape.d_ff,
            "activation_function": "gelu", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0, "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None,
            "architectures": ["GPT2LMHeadModel"]}


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``model``'s weights under GPT2LMHeadModel's names (the tied ``lm_head`` left out, as transformers saves it)."""
    sd = model.state_dict()
    out = {"transformer.wte.weight": sd["tok.weight"], "transformer.wpe.weight": sd["pos.weight"],
           "transformer.ln_f.weight": sd["ln_f.weight"], "transformer.ln_f.bias": sd["ln_f.bias"]}
    ours_theirs = {"ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
                   "mlp.0": "mlp.c_fc", "mlp.2": "mlp.c_proj"}
    for i in range(model.shape.n_layers):
        for ours, theirs in ours_theirs.items():
            weight = sd[f"blocks.{i}.{ours}.weight"]
            conv1d = not ours.startswith("ln")
            out[f"transformer.h.{i}.{theirs}.weight"] = weight.T if conv1d else weight
            out[f"transformer.h.{i}.{theirs}.bias"] = sd[f"blocks.{i}.{ours}.bias"]
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def byte_level_tokenizer():
    """A ``tokenizers.Tokenizer`` whose token i is byte i: byte-level BPE with the 256 bytes and no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def hf_tokenizer(data_dir: str | Path):
    """The run's tokenizer as a transformers ``PreTrainedTokenizerFast``; None for pre-tokenized data."""
    from transformers import PreTrainedTokenizerFast

    try:
        ours = load_tokenizer(data_dir)
    except ValueError:  # pre-tokenized: no tokenizer
        return None
    tok = ours.tokenizer if isinstance(ours, BPETokenizer) else byte_level_tokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)


def export_run(run_dir: str | Path, out_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write the run's final model (``model.pt``) as a transformers GPT-2 model into ``out_dir``, atomically.

    ``data_dir`` is the run's prepared dataset, for its tokenizer; by default the
    study's, ``results/<study>/data/<dataset>`` for a run in
    ``results/<study>/runs/<dataset>/<size>/<run>``. The directory appears
    complete or not at all: it is written beside ``out_dir`` and renamed.
    """
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise ExportError(f"exporting needs transformers and safetensors; fix: pip install -e \".[{EXTRA}]\"") \
            from None
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "model.pt").is_file():
        raise ExportError(f"{run_dir}: no model.pt, so not a finished run; fix: give a run's directory, "
                          f"results/<study>/runs/<dataset>/<size>/<run>, after it trained")
    model = load_model(run_dir / "model.pt")
    config = GPT2Config(**gpt2_config(model.shape))
    data_dir = Path(data_dir) if data_dir else run_dir.parents[2].parent / "data" / run_dir.parents[1].name
    if not (data_dir / "meta.json").is_file():
        raise ExportError(f"{data_dir}: no prepared dataset (meta.json) for the run's tokenizer; fix: give --data, "
                          f"the run's results/<study>/data/<dataset>")
    tokenizer = hf_tokenizer(data_dir)
    hf = GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)  # lm_head: tied to wte
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)  # an earlier export that crashed between its two renames
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
