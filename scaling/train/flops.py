"""A run's budget: its tokens D = M·N and its training compute, two ways; and model FLOPs utilization (MFU).

``tokens`` D = M·N, for N parameters at M tokens per parameter, rounded to a
whole token (:func:`planned_tokens`): a run trains on whole tokens, and the
runs table stores D as an integer. The study plans this D, the trainer trains on it and
the fits derive it the same way for tables that give M but not D, so the
planned D is the fitted one.

Scaling-law papers count compute differently, so a run records both:

``flops`` = 6·N·D (Kaplan et al. 2020, §2.1), N all parameters, D tokens:
a forward pass costs 2 FLOPs per parameter per token (one multiply, one add)
and the backward pass twice that. It ignores attention over the context and
counts the embedding tables as if they were matrix products.

``flops_with_attention`` counts the matrix products the model actually does,
per token, forward, for L layers of width d, feed-forward width f, context T,
vocabulary V:

    per layer:    2·3d²   query, key, value projections
                  2·T·d   attention logits q·kᵀ against T positions
                  2·T·d   the attention-weighted sum of values
                  2·d²    output projection
                  2·2·d·f feed-forward
    output layer: 2·d·V   logits

so C_fwd = 2·L·(4d² + 2df) + 4·L·T·d + 2·d·V, and training costs 3·C_fwd per
token (backward = 2× forward), i.e. 6·(L·(4d² + 2df) + d·V) + 12·L·T·d. This is
the count of Hoffmann et al. (2022, Appendix F) without their embedding-lookup,
softmax and LayerNorm terms (lower order), and the "6N + 12·L·H·Q·T" of
Chowdhery et al. (2022, Appendix B) that defines MFU. Like both, it counts
the full T×T attention matrix although a causal mask leaves half of it unused.

MFU = achieved model FLOP/s (with attention) / the accelerator's peak dense
BF16 FLOP/s, looked up by device name in :data:`GPU_PEAK_BF16`.
"""

from __future__ import annotations

import numbers

from scaling.train.shapes import Shape


def planned_tokens(n_params, token_multiplier):
    """D = M·N rounded to a whole token (halves to even, as Python's ``round``): an int for scalars, whole numbers
    as floats for arrays and Series (NaN stays NaN). Scalars need no numpy: the Snakefile sizes runs with this."""
    if isinstance(n_params, numbers.Real) and isinstance(token_multiplier, numbers.Real):
        return round(float(n_params) * float(token_multiplier))
    import numpy as np

    return np.rint(np.multiply(n_params, token_multiplier))


def flops_6nd(n_params, tokens):
    """C = 6·N·D (Kaplan et al. 2020), of scalars, arrays or Series."""
    return 6.0 * n_params * tokens


def flops_per_token(shape: Shape) -> float:
    """Training FLOPs per token with attention and the output layer: 6·(L·(4d² + 2df) + dV) + 12·L·T·d."""
    d, f, L, T, V = shape.d_model, shape.d_ff, shape.n_layers, shape.seq_len, shape.vocab_size
    return 6.0 * (L * (4 * d * d + 2 * d * f) + d * V) + 12.0 * L * T * d


def flops_with_attention(shape: Shape, tokens: float) -> float:
    """Training FLOPs of ``tokens`` tokens, attention and output layer counted (see module docstring)."""
    return flops_per_token(shape) * tokens


# Peak dense (not 2:4-sparse) BF16 tensor-core FLOP/s, from the vendors' datasheets.
# Matched in order against torch.cuda.get_device_name(), so specific names come first.
GPU_PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),        # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("L40", 181.05e12),
    ("L4", 121e12),
    ("RTX 4090", 165.2e12),     # with FP32 accumulate
    ("RTX 3090", 71e12),
    ("RTX A6000", 154.8e12),
    ("MI300X", 1307.4e12),
)


def gpu_peak_flops(device_name: str) -> float | None:
    """Peak dense BF16 FLOP/s of the GPU called ``device_name``, or None if it is not in the table."""
    for key, peak in GPU_PEAK_BF16:
        if key in device_name:
            return peak
    return None
