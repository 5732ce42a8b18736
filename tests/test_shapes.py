import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling.train.flops import flops_6nd, flops_per_token, flops_with_attention, gpu_peak_flops
from scaling.train.model import GPT, Shape, lm_loss
from scaling.train.shapes import count_params, shape_for_params


def test_the_sizing_rule_gives_gpt2_small_for_124m_parameters():
    shape = shape_for_params(124e6, vocab_size=50257, seq_len=1024)
    assert (shape.d_model, shape.n_layers, shape.n_heads) == (768, 12, 12)
    assert count_params(shape)["n_params"] == 124_439_808  # GPT-2 small, tied embeddings


@pytest.mark.parametrize("target", [3e4, 1e5, 3e5, 1e6, 1e7])
def test_the_rule_picks_the_nearest_of_its_shapes(target):
    kw = dict(vocab_size=256, seq_len=64, aspect_ratio=16, head_dim=16)
    shape = shape_for_params(target, **kw)
    assert shape.d_model == 16 * max(1, round(16 * shape.n_layers / 16)) and shape.head_dim == 16
    err = abs(math.log(count_params(shape)["n_params"] / target))
    for n_layers in range(1, 40):
        d = 16 * max(1, round(16 * n_layers / 16))
        other = count_params(Shape(d, n_layers, d // 16, vocab_size=256, seq_len=64))["n_params"]
        assert err <= abs(math.log(other / target)) + 1e-12


@pytest.mark.parametrize("shape", [Shape(48, 3, 4, ff_ratio=2.5, vocab_size=300, seq_len=32),
                                   Shape(32, 2, 2, vocab_size=256, seq_len=64, qk_layernorm=True)])
def test_flops_with_attention_equal_the_matmul_flops_pytorch_counts_in_a_training_step(shape):
    torch.manual_seed(0)
    model = GPT(shape)
    x = torch.randint(0, shape.vocab_size, (3, shape.seq_len))
    # the math attention kernel is made of matmuls the counter sees (it counts the full T×T, as the formula)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss, _ = lm_loss(model(x), x)
        loss.backward()
    assert counter.get_total_flops() == flops_with_attention(shape, x.numel())


def test_the_two_compute_counts_differ_as_their_formulas_say():
    shape = Shape(768, 12, 12, vocab_size=50257, seq_len=1024)
    n = count_params(shape)["n_params"]
    assert flops_6nd(n, 1e9) == 6 * n * 1e9
    # the detailed count adds 12·L·T·d per token for attention and drops embeddings' and biases' share of 6N
    attention = 12 * 12 * 1024 * 768
    assert flops_per_token(shape) == 6 * (12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 50257) + attention
    assert flops_per_token(shape) / (6 * n) == pytest.approx(1.144, abs=0.001)  # GPT-2 small: +14%


def test_gpu_peaks_are_looked_up_by_name_most_specific_first():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak_flops("NVIDIA L40S") == 362.05e12 and gpu_peak_flops("NVIDIA L4") == 121e12
    assert gpu_peak_flops("Some Future Accelerator") is None
