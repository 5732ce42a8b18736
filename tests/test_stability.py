import math

import numpy as np
import pandas as pd
import pytest

from scaling.stability import first_divergence, lr_sensitivity


def test_divergence_is_a_nonfinite_loss_or_a_rise_above_initial_plus_margin_after_warmup():
    assert first_divergence([5.5, 4.0, 3.0], 0, 5.5, 1, 1.0) is None
    assert first_divergence([5.5, 6.8, 3.0], 0, 5.5, 5, 1.0) is None  # a rise during warmup is allowed
    assert first_divergence([5.5, 6.8, 3.0], 0, 5.5, 1, 1.0) == 1
    assert first_divergence([3.0, math.nan, 9.0], 40, 5.5, 0, 1.0) == 41
    assert first_divergence([3.0, math.inf], 40, 5.5, 100, 1.0) == 41


def sweep():
    # two sizes over the same LR grid; size "b" has a diverged run at the largest LR
    rows = [("a", 1e-3, 3.2, "ok"), ("a", 3e-3, 3.0, "ok"), ("a", 1e-2, 3.1, "ok"),
            ("b", 1e-3, 2.9, "ok"), ("b", 3e-3, 2.6, "ok"), ("b", 1e-2, np.nan, "diverged"),
            ("b", 3e-3, 2.8, "ok")]  # a second seed of b at 3e-3
    return pd.DataFrame([{"size": s, "lr": lr, "val_loss": v, "status": st, "initial_loss": 5.5}
                         for s, lr, v, st in rows])


def test_lr_sensitivity_is_the_mean_gap_to_the_best_with_diverged_runs_at_the_initial_loss():
    out = lr_sensitivity(sweep()).set_index("size")
    assert out.loc["a", "lr_sensitivity"] == pytest.approx(((3.2 - 3.0) + 0 + (3.1 - 3.0)) / 3)
    # b: seeds averaged (3e-3 → 2.7), the diverged run counts as 5.5
    assert out.loc["b", "lr_sensitivity"] == pytest.approx(((2.9 - 2.7) + 0 + (5.5 - 2.7)) / 3)
    assert out.loc["b", "best_lr"] == 3e-3 and out.loc["b", "best_loss"] == pytest.approx(2.7)
    assert out.loc["b", "n_diverged"] == 1 and out.loc["a", "n_lrs"] == 3


def test_a_run_that_ends_worse_than_it_began_is_capped_at_the_initial_loss():
    runs = sweep()
    runs.loc[0, "val_loss"] = 9.0
    a = lr_sensitivity(runs).set_index("size").loc["a", "lr_sensitivity"]
    assert a == pytest.approx(((5.5 - 3.0) + 0 + 0.1) / 3)


def test_lr_sensitivity_groups_by_several_columns():
    runs = pd.concat([sweep().assign(dataset="x"), sweep().assign(dataset="y", val_loss=lambda d: d.val_loss + 1)])
    out = lr_sensitivity(runs, by=["dataset", "size"])
    assert len(out) == 4 and set(out["dataset"]) == {"x", "y"}
