"""A model's shape, its parameter counts, and sizes given as target parameter counts turned into shapes by one rule.

Parameter counts follow Kaplan et al. (2020): ``n_params`` counts every
trainable parameter once (the tied output layer is the token embedding);
``n_params_nonembed`` leaves out the token and position embeddings. This
module imports no torch: the Snakefile sizes every run with it.

A study may list a size as ``{params: 1e6}`` instead of an explicit shape. The
rule keeps the aspect ratio d_model/n_layers and the head width fixed, as
scaling-law model families do (Kaplan et al. 2020 find the loss nearly flat in
the aspect ratio between about 20 and 200, and the GPT-2/GPT-3 families use a
64-wide head):

    for n_layers L = 1, 2, …:  d_model = head_dim · max(1, round(aspect_ratio·L / head_dim)),
                               n_heads = d_model / head_dim;
    take the L whose parameter count N(L) (:func:`count_params`,
    embeddings included) is nearest the target in log space, the smaller L on a tie.

With the defaults (aspect ratio 64, head width 64) a target of 124M gives 12
layers of width 768, GPT-2 small. Tiny CPU models need a narrower head and a
smaller aspect ratio to resolve their sizes (e.g. head_dim 16, aspect_ratio 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ASPECT_RATIO = 64
HEAD_DIM = 64
MAX_LAYERS = 1024


@dataclass(frozen=True)
class Shape:
    """The hyperparameters that fix a model's size."""

    d_model: int
    n_layers: int
    n_heads: int
    ff_ratio: float = 4.0
    vocab_size: int = 256
    seq_len: int = 128
    qk_layernorm: bool = False

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        return int(round(self.ff_ratio * self.d_model))

    def to_dict(self) -> dict:
        return dict(vars(self))  # its fields (asdict's deep copy is slow, and they are plain values)


def count_params(shape: Shape) -> dict[str, int]:
    """Closed-form parameter counts of :class:`scaling.train.model.GPT` for ``shape``.

    Per block: attention 4·d² + 4·d (q, k, v, out projections with biases),
    MLP 2·d·d_ff + d_ff + d, two LayerNorms 4·d, and with qk-layernorm two
    more over a head's width, 4·d/n_heads. Embeddings: V·d (tied with the
    output layer) + T·d positions. Final LayerNorm 2·d.
    """
    d, f, V, T = shape.d_model, shape.d_ff, shape.vocab_size, shape.seq_len
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d + (4 * shape.head_dim if shape.qk_layernorm else 0)
    nonembed = shape.n_layers * block + 2 * d
    embed = V * d + T * d
    return {"n_params": nonembed + embed, "n_params_nonembed": nonembed}


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
