import math

import pytest
import torch

from scaling.model import GPT, Shape, count_params


@pytest.mark.parametrize("shape", [Shape(16, 1, 2), Shape(48, 3, 4, ff_ratio=2.5, seq_len=32), Shape(64, 2, 8, vocab_size=1000)])
def test_closed_form_parameter_counts_match_the_module(shape):
    model = GPT(shape)
    counts = count_params(shape)
    assert sum(p.numel() for p in model.parameters()) == counts["n_params"]
    embed = model.tok.weight.numel() + model.pos.weight.numel()
    assert counts["n_params_nonembed"] == counts["n_params"] - embed


def test_output_layer_is_tied_to_the_embedding():
    model = GPT(Shape(16, 1, 2))
    logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape == (1, 4, 256)
    assert not any(p.shape == (256, 16) and p is not model.tok.weight for p in model.parameters())


def test_initial_loss_is_near_uniform_and_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(Shape(32, 2, 2, seq_len=16))
    x, y = torch.randint(0, 256, (2, 4, 16))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(256)) < 0.1
    logits, _ = model(x)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 256  # changing the future leaves earlier positions unchanged
    logits2, _ = model(x2)
    assert torch.allclose(logits[:, :10], logits2[:, :10], atol=1e-6)
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        Shape(30, 1, 4)
