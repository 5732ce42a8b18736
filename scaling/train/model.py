"""A GPT-style decoder, sized from a shape.

Pre-norm transformer blocks (LayerNorm → causal self-attention → residual,
LayerNorm → GELU MLP → residual), learned absolute position embeddings, and an
output layer tied to the token embedding, as in GPT-2 and nanoGPT
(Radford et al. 2019; Karpathy 2022). Attention uses PyTorch's
``scaled_dot_product_attention`` so that fused kernels are used where the
device has them.

With ``qk_layernorm`` the queries and keys of each head pass through a
LayerNorm before their dot product (Dehghani et al. 2023; Wortsman et al. 2023
show it prevents the attention-logit growth that makes large learning rates
diverge). :func:`lm_loss` adds the optional z-loss of PaLM (Chowdhery et al.
2022), the other stabilizer of Wortsman et al.

The shape and its closed-form parameter counts are in :mod:`scaling.train.shapes`,
which imports no torch (the Snakefile sizes runs with it).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.train.shapes import Shape


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cross-entropy (nats/token) and the training objective.

    objective = CE + z_loss·mean(log² Z), with log Z = logsumexp of a position's
    logits (PaLM's auxiliary z-loss, Chowdhery et al. 2022, coefficient 1e-4 there
    and in Wortsman et al. 2023): it keeps log Z near 0 so the softmax stays
    well conditioned. With z_loss = 0 the objective is the cross-entropy.
    """
    logits = logits.float().reshape(-1, logits.size(-1))
    targets = targets.reshape(-1)
    if not z_loss:
        ce = F.cross_entropy(logits, targets)
        return ce, ce
    log_z = torch.logsumexp(logits, dim=-1)
    ce = (log_z - logits.gather(1, targets[:, None]).squeeze(1)).mean()
    return ce, ce + z_loss * log_z.square().mean()


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.n_heads = shape.n_heads
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model)
        self.proj = nn.Linear(shape.d_model, shape.d_model)
        self.q_norm = nn.LayerNorm(shape.head_dim) if shape.qk_layernorm else nn.Identity()
        self.k_norm = nn.LayerNorm(shape.head_dim) if shape.qk_layernorm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads) for t in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.ln1 = nn.LayerNorm(shape.d_model)
        self.attn = CausalSelfAttention(shape)
        self.ln2 = nn.LayerNorm(shape.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(shape.d_model, shape.d_ff),
            nn.GELU(),
            nn.Linear(shape.d_ff, shape.d_model),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.shape = shape
        self.tok = nn.Embedding(shape.vocab_size, shape.d_model)
        self.pos = nn.Embedding(shape.seq_len, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.ln_f = nn.LayerNorm(shape.d_model)
        self.apply(self._init)
        # GPT-2: scale the residual projections by 1/sqrt(2·n_layers).
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * shape.n_layers))

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for token ids ``idx`` (B, T); ``positions`` and ``mask`` as in :meth:`hidden`."""
        return self.output(self.hidden(idx, positions, mask))

    def hidden(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final (normalized) hidden states (B, T, d) of token ids ``idx`` (B, T).

        By default token t sits at position t and attends to tokens 0 … t (causal).
        Packed sequences (several continuations of one context, :mod:`scaling.evaluate.scoring`)
        give their own ``positions`` (B, T) and ``mask`` (B, 1, T, T), True where a
        query may attend to a key; every query must see at least one key.
        """
        if positions is None:
            positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (…, V) of hidden states (…, d): the output layer, tied to the token embedding."""
        return h @ self.tok.weight.T

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay matrices, not biases, norms or position embeddings."""
        decay = [p for n, p in self.named_parameters() if p.dim() == 2 and not n.startswith("pos.")]
        other = [p for n, p in self.named_parameters() if not (p.dim() == 2 and not n.startswith("pos."))]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": other, "weight_decay": 0.0},
        ]
