"""Scaling laws as pure functions.

Each takes arrays and parameters and returns predicted loss; fitting lives in
:mod:`scaling.fit`.
"""

from __future__ import annotations

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
