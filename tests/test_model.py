import math

import pytest
import torch

from scaling.train.model import GPT, Shape, lm_loss
from scaling.train.shapes import count_params


@pytest.mark.parametrize("shape", [Shape(16, 1, 2), Shape(48, 3, 4, ff_ratio=2.5, seq_len=32), Shape(64, 2, 8, vocab_size=1000),
                                   Shape(32, 2, 4, qk_layernorm=True)])
def test_closed_form_parameter_counts_match_the_module(shape):
    model = GPT(shape)
    counts = count_params(shape)
    assert sum(p.numel() for p in model.parameters()) == counts["n_params"]
    embed = model.tok.weight.numel() + model.pos.weight.numel()
    assert counts["n_params_nonembed"] == counts["n_params"] - embed


def test_output_layer_is_tied_to_the_embedding():
    model = GPT(Shape(16, 1, 2))
    logits = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape == (1, 4, 256)
    assert not any(p.shape == (256, 16) and p is not model.tok.weight for p in model.parameters())


def test_initial_loss_is_near_uniform_and_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(Shape(32, 2, 2, seq_len=16))
    x, y = torch.randint(0, 256, (2, 4, 16))
    logits = model(x)
    loss, _ = lm_loss(logits, y)
    assert abs(loss.item() - math.log(256)) < 0.1
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 256  # changing the future leaves earlier positions unchanged
    logits2 = model(x2)
    assert torch.allclose(logits[:, :10], logits2[:, :10], atol=1e-6)
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])


@pytest.mark.parametrize("qk_layernorm", [False, True])
def test_given_positions_and_mask_match_the_causal_path_and_pack_sequences(qk_layernorm):
    """Positions 0 … T−1 with the causal mask give the default path's logits; a packed sequence (a shared prefix,
    then two continuations at the positions they follow it, each seeing the prefix and itself) gives the logits of
    the two sequences run apart."""
    torch.manual_seed(0)
    model = GPT(Shape(32, 2, 4, seq_len=16, qk_layernorm=qk_layernorm)).eval()
    x = torch.randint(0, 256, (3, 10))
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    assert torch.allclose(model(x, torch.arange(10).expand(3, 10), causal.expand(3, 1, 10, 10)), model(x), atol=1e-5)
    prefix, a, b = x[:1, :6], x[:1, 6:9], x[:1, 9:]
    packed = torch.cat([prefix, a, b], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 6]])
    segment = torch.tensor([0] * 6 + [1] * 3 + [2])
    mask = ((segment[None, :] == 0) | (segment[None, :] == segment[:, None])) & causal
    logits = model(packed, positions, mask[None, None])[0]
    assert torch.allclose(logits[:9], model(torch.cat([prefix, a], dim=1))[0], atol=1e-5)
    assert torch.allclose(logits[9], model(torch.cat([prefix, b], dim=1))[0, 6], atol=1e-5)
    assert not torch.allclose(logits[9], model(packed)[0, 9], atol=1e-3)  # the plain causal path sees a


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        Shape(30, 1, 4)


def test_z_loss_adds_the_mean_squared_log_partition_function():
    torch.manual_seed(0)
    logits, targets = 3 * torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    ce, objective = lm_loss(logits, targets, z_loss=1e-2)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits.view(-1, 11), targets.view(-1)).item(), rel=1e-6)
    log_z = torch.logsumexp(logits, dim=-1)
    assert objective.item() == pytest.approx(ce.item() + 1e-2 * (log_z ** 2).mean().item(), rel=1e-6)
    assert objective.item() > ce.item()
    assert lm_loss(logits, targets)[1].item() == pytest.approx(ce.item(), rel=1e-6)


def test_qk_layernorm_normalizes_queries_and_keys():
    torch.manual_seed(0)
    shape = Shape(32, 1, 4, seq_len=8, qk_layernorm=True)
    model = GPT(shape)
    attn = model.blocks[0].attn
    seen = {}
    attn.q_norm.register_forward_hook(lambda m, i, o: seen.update(q=o))
    model(torch.randint(0, 256, (2, 8)))
    assert seen["q"].shape == (2, 8, 4, shape.head_dim)  # per head, over the head's width
    assert torch.allclose(seen["q"].mean(-1), torch.zeros(2, 8, 4), atol=1e-5)
    assert torch.allclose(seen["q"].var(-1, unbiased=False), torch.ones(2, 8, 4), atol=1e-2)  # LayerNorm eps
    assert not any("norm" in n for n, _ in GPT(Shape(32, 1, 4)).named_parameters() if "attn" in n)
