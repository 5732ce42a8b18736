"""Scaling laws as pure functions, and the registry that names them.

Each law takes arrays of inputs and keyword parameters and returns the predicted
quantity; it never fits anything. Fitting lives in :mod:`scaling.fit.overtraining`,
:mod:`scaling.fit.downstream`, :mod:`scaling.fit.chinchilla` and :mod:`scaling.fit.optimal_lr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def overtraining_loss(N, M, E, a, b, c):
    """The over-training law of Gadre et al. (2024), Eq. 4 in their parametrization.

        L(N, M) = E + a·N^b + c·6^(b/2)·(M·N)^b,

    with N parameters, M = D/N tokens per parameter, D = M·N tokens, irreducible
    loss E, and a shared exponent b < 0 for the parameter and data terms (the
    Chinchilla form with α = β). With compute C = 6·N·D it is equivalently

        L(C, M) = E + (a′·M^η + c·M^(−η))·C^(−η),   η = −b/2,  a′ = a·6^η,

    so at fixed M the loss is a power law in compute with the same exponent η
    for every M (their "reliable scaling in the over-trained regime").
    """
    N = np.asarray(N, dtype=float)
    M = np.asarray(M, dtype=float)
    return E + a * N**b + c * 6.0 ** (b / 2.0) * (M * N) ** b


def overtraining_compute_form(b: float, a: float) -> dict[str, float]:
    """η and a′ of the compute form L = E + (a′·M^η + c·M^−η)·C^−η (see :func:`overtraining_loss`)."""
    eta = -b / 2.0
    return {"eta": eta, "a_prime": a * 6.0**eta}


def chinchilla_loss(N, D, E, A, alpha, B, beta):
    """The parametric loss of Hoffmann et al. (2022), Eq. 2 ("Approach 3").

        L(N, D) = E + A·N^(−α) + B·D^(−β),

    with N parameters and D training tokens: E is the loss of an ideal model on
    the data distribution, A·N^−α the excess loss of a finite model trained to
    convergence, B·D^−β the excess loss of finite training. Hoffmann et al.
    report E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28; the refit of
    Besiroglu et al. (2024) on the points reconstructed from their Figure 4 gives
    E = 1.82, A = 482, B = 2085, α = 0.35, β = 0.37.
    """
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * N**-alpha + B * D**-beta


def downstream_error(L, epsilon, k, gamma):
    """Average top-1 error as a function of loss, Gadre et al. (2024), Eq. 5.

        Err(L) = ε − k·exp(−γ·L),

    with ε the error of a model that knows nothing (near random chance, at large
    loss), and k, γ > 0 how fast the error falls as loss falls. Chained with a loss
    law, Err(L(N, M)) predicts downstream error from N and M.
    """
    return epsilon - k * np.exp(-gamma * np.asarray(L, dtype=float))


def optimal_lr(N, D, c, a, b):
    """The optimal peak learning rate as a power law in N and D: the form of the "Step Law" of
    Li et al. (2025), "Predictable Scale: Part I".

        η*(N, D) = c·N^a·D^b,

    with a < 0 (larger models want smaller steps) and b the effect of the token
    budget. The constants depend on the optimizer, schedule and data, which is why
    they are fitted per study.
    """
    return c * np.asarray(N, dtype=float) ** a * np.asarray(D, dtype=float) ** b


def power_law(x, k, a):
    """y = k·x^a: the form of the compute-optimal N_opt(C) and D_opt(C) of Hoffmann et al. (2022).

    Their Approaches 1 and 2 give N_opt ∝ C^0.50 and C^0.49, D_opt ∝ C^0.50 and C^0.51.
    """
    return k * np.asarray(x, dtype=float) ** a


def lr_sensitivity(losses, initial_loss: float) -> float:
    """LR sensitivity of Wortsman et al. (2023), "Small-scale proxies for large-scale instabilities", §3.1.

        S = E_η [ min(L(η), L₀) − min_η L(η) ],

    the mean, over a learning-rate sweep spaced evenly in log η, of how much worse
    each rate does than the best, with a diverged run (NaN or infinite loss, or a
    loss above the initial loss L₀) counted at L₀. Zero means every rate in the
    sweep is as good as the best; larger means the model is more sensitive.
    """
    L = np.asarray(losses, dtype=float)
    capped = np.where(np.isfinite(L), np.minimum(L, initial_loss), initial_loss)
    return float(np.mean(capped - capped.min()))


@dataclass(frozen=True)
class Law:
    """A law's name, formula, inputs (data columns) and parameters, and the function that evaluates it."""

    name: str
    formula: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    fn: Callable
    source: str

    def __call__(self, *inputs, **params):
        return self.fn(*inputs, **params)


LAWS = {
    law.name: law
    for law in (
        Law("overtraining", "L(N, M) = E + a*N^b + c*6^(b/2)*(M*N)^b", ("n_params", "token_multiplier"),
            ("E", "a", "b", "c"), overtraining_loss, "Gadre et al. 2024, arXiv:2403.08540, Eq. 4"),
        Law("chinchilla", "L(N, D) = E + A*N^-alpha + B*D^-beta", ("n_params", "tokens"),
            ("E", "A", "alpha", "B", "beta"), chinchilla_loss, "Hoffmann et al. 2022, arXiv:2203.15556, Eq. 2"),
        Law("downstream", "Err(L) = epsilon - k*exp(-gamma*L)", ("loss",), ("epsilon", "k", "gamma"),
            downstream_error, "Gadre et al. 2024, arXiv:2403.08540, Eq. 5"),
        Law("optimal_lr", "lr*(N, D) = c*N^a*D^b", ("n_params", "tokens"), ("c", "a", "b"), optimal_lr,
            "the form of Li et al. 2025 (Step Law)"),
        Law("power_law", "y = k*x^a", ("x",), ("k", "a"), power_law,
            "Hoffmann et al. 2022, Approaches 1 and 2"),
    )
}
