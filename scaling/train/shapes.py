"""Model sizes given as target parameter counts, turned into shapes by one rule.

A study may list a size as ``{params: 1e6}`` instead of an explicit shape. The
rule keeps the aspect ratio d_model/n_layers and the head width fixed, as
scaling-law model families do (Kaplan et al. 2020 find the loss nearly flat in
the aspect ratio between about 20 and 200, and the GPT-2/GPT-3 families use a
64-wide head):

    for n_layers L = 1, 2, …:  d_model = head_dim · max(1, round(aspect_ratio·L / head_dim)),
                               n_heads = d_model / head_dim;
    take the L whose parameter count N(L) (:func:`scaling.train.model.count_params`,
    embeddings included) is nearest the target in log space, the smaller L on a tie.

With the defaults (aspect ratio 64, head width 64) a target of 124M gives 12
layers of width 768, GPT-2 small. Tiny CPU models need a narrower head and a
smaller aspect ratio to resolve their sizes (e.g. head_dim 16, aspect_ratio 16).
"""

from __future__ import annotations

import math

from scaling.train.model import Shape, count_params

ASPECT_RATIO = 64
HEAD_DIM = 64
MAX_LAYERS = 1024


def shape_for_params(
    target: float,
    *,
    vocab_size: int,
    seq_len: int,
    aspect_ratio: float = ASPECT_RATIO,
    head_dim: int = HEAD_DIM,
    ff_ratio: float = 4.0,
    qk_layernorm: bool = False,
) -> Shape:
    """The shape of the rule above whose parameter count is nearest ``target``."""

    def shape(n_layers: int) -> Shape:
        d = head_dim * max(1, round(aspect_ratio * n_layers / head_dim))
        return Shape(d, n_layers, d // head_dim, ff_ratio, vocab_size, seq_len, qk_layernorm)

    best, best_err = None, math.inf
    for n_layers in range(1, MAX_LAYERS + 1):
        candidate = shape(n_layers)
        n = count_params(candidate)["n_params"]
        err = abs(math.log(n / target))
        if err < best_err:
            best, best_err = candidate, err
        if n > target:  # N grows with L: every deeper shape is farther
            break
    return best
