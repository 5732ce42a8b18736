"""A fitted law: parameters, standard errors, intervals, predictions with intervals, JSON.

Two intervals for every prediction: the *law*'s (``interval="confidence"``:
where the mean of many seeds would land) and a *new run*'s (``"prediction"``:
adds one run's noise). They come from, in this order:

- ``calibration`` (:mod:`scaling.fit.calibration`): when the law was tested on runs
  it was not fitted on (held-out runs, extrapolation folds), a Student-t error
  model whose scale grows with the distance beyond the fit set; the intervals
  are then calibrated (``calibrated`` is True);
- ``bootstrap``: percentile intervals over the refits of a bootstrap over runs
  (:mod:`scaling.fit.bootstrap`), plus a draw of run noise for a new run: the
  parameter uncertainty of a law assumed to be right;
- ``t``: for a power law fitted by OLS in log space, Student-t intervals from the
  coefficient covariance; a prediction interval adds the residual variance.

Without any of these (a fit with ``resamples=0`` and no closed form), intervals are NaN.
Parameter intervals come from the bootstrap or the t distribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from scaling.fit.bootstrap import percentile_interval
from scaling.fit.calibration import Calibration, displacement, log_inputs
from scaling.fit.laws import LAWS

NAN = float("nan")


@dataclass
class FitResult:
    """A law fitted to data. ``predict`` evaluates it with an interval; ``summary`` tabulates it."""

    law: str
    method: str
    params: dict[str, float]
    stderr: dict[str, float]
    n_points: int
    objective: float
    level: float = 0.95
    interval_method: str = "none"
    samples: np.ndarray | None = None  # bootstrap: parameter refits, one row per resample (NaN: failed)
    noise: np.ndarray | None = None  # bootstrap: one draw of run noise per resample
    noise_sd: float = float("nan")  # run-to-run noise of one run (in residual_space): seeds, or robust residual scale
    residual_space: str = "linear"  # residuals are y − ŷ ("linear") or log y − log ŷ ("log")
    loglinear: dict | None = None  # t intervals: {"cov": …, "sigma": …, "dof": …} of log y = β·[1, log x…]
    calibration: Calibration | None = None  # the error model of out-of-sample errors, when there were enough
    fit_inputs: np.ndarray | None = None  # log10 inputs of the fit set, rows (for distances beyond it)
    meta: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def extrapolation(self, *inputs) -> tuple[np.ndarray, np.ndarray]:
        """``(up, down)``: decades beyond the fit set's inputs (:func:`scaling.fit.calibration.displacement`)."""
        return displacement(self.fit_inputs, log_inputs(*inputs))

    # -- evaluation ---------------------------------------------------------------------------------------
    def _eval(self, inputs, params) -> np.ndarray:
        return np.asarray(LAWS[self.law](*inputs, **params), dtype=float)

    def value(self, *inputs) -> np.ndarray:
        """The law at ``inputs`` with the fitted parameters, without an interval."""
        return self._eval([np.asarray(x, dtype=float) for x in inputs], self.params)

    def predict_samples(self, *inputs, noise: bool = True) -> np.ndarray:
        """The law at ``inputs`` under each bootstrap refit (resamples × points), plus residual noise."""
        if self.samples is None:
            raise ValueError("this fit has no bootstrap samples; fit it with resamples > 0")
        names = LAWS[self.law].params
        inputs = [np.atleast_1d(np.asarray(x, dtype=float)) for x in inputs]
        with np.errstate(all="ignore"):
            y = np.stack([self._eval(inputs, dict(zip(names, row))) * np.ones_like(inputs[0])
                          for row in self.samples])
        if noise:
            eps = self.noise[:, None]
            y = y * np.exp(eps) if self.residual_space == "log" else y + eps
        return y

    def predict(self, *inputs, interval: str = "prediction", level: float | None = None,
                rows=None) -> pd.DataFrame:
        """Predictions at ``inputs`` (arrays, in the order of the law's inputs) with an interval.

        ``interval="prediction"`` bounds a new run's measured value; ``"confidence"``
        bounds the law itself (the mean over seeds). Columns: ``predicted``, ``lo``,
        ``hi``. With a calibration, ``rows`` (one id per input point, −1 for none)
        names the predicted row of each point, so that a row's interval leaves out
        the score measured at that row (leave-one-out).
        """
        if interval not in ("prediction", "confidence"):
            raise ValueError("interval must be 'prediction' or 'confidence'")
        level = self.level if level is None else level
        inputs = [np.atleast_1d(np.asarray(x, dtype=float)) for x in inputs]
        y = self._eval(inputs, self.params) * np.ones_like(inputs[0])
        lo = hi = np.full_like(y, NAN)
        if self.calibration is not None:
            lo, hi = self.calibration.interval(y, *self.extrapolation(*inputs), level, interval, rows)
        elif self.interval_method == "bootstrap":
            lo, hi = percentile_interval(self.predict_samples(*inputs, noise=interval == "prediction"), level)
        elif self.interval_method == "t":
            Z = np.column_stack([np.ones_like(y)] + [np.log(x) for x in inputs])
            var = np.einsum("ij,jk,ik->i", Z, np.asarray(self.loglinear["cov"]), Z)
            if interval == "prediction":
                var = var + self.loglinear["sigma"] ** 2
            half = stats.t.ppf(0.5 + level / 2, self.loglinear["dof"]) * np.sqrt(var)
            lo, hi = y * np.exp(-half), y * np.exp(half)
        return pd.DataFrame({"predicted": y, "lo": lo, "hi": hi})

    # -- reporting ------------------------------------------------------------------------------------------
    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """A ``level`` interval for each parameter (bootstrap percentiles or t intervals)."""
        names = LAWS[self.law].params
        if self.interval_method == "bootstrap":
            lo, hi = percentile_interval(self.samples, self.level)
            return {p: (float(lo[i]), float(hi[i])) for i, p in enumerate(names)}
        if self.interval_method == "t":  # log y = log k + Σ aⱼ·log xⱼ: the prefactor's interval is exp(log k ± …)
            t = stats.t.ppf(0.5 + self.level / 2, self.loglinear["dof"])
            se = np.sqrt(np.diag(np.asarray(self.loglinear["cov"])))
            beta = [np.log(self.params[names[0]])] + [self.params[p] for p in names[1:]]
            lo, hi = np.array(beta) - t * se, np.array(beta) + t * se
            lo[0], hi[0] = np.exp(lo[0]), np.exp(hi[0])
            return {p: (float(lo[i]), float(hi[i])) for i, p in enumerate(names)}
        return {p: (NAN, NAN) for p in names}

    def summary(self) -> pd.DataFrame:
        """One row per parameter: value, standard error and the ``level`` interval."""
        names = LAWS[self.law].params
        iv = self.intervals
        pct = f"{100 * self.level:g}%"
        return pd.DataFrame({
            "parameter": list(names),
            "value": [self.params[p] for p in names],
            "stderr": [self.stderr[p] for p in names],
            f"{pct} lo": [iv[p][0] for p in names],
            f"{pct} hi": [iv[p][1] for p in names],
        })

    def __str__(self) -> str:
        law = LAWS[self.law]
        if self.calibration is not None:
            c = self.calibration.params
            how = (f"calibrated on {self.calibration.n_scores} out-of-sample errors "
                   f"({', '.join(sorted(set(self.calibration.source)))}): s0 = {c['s0']:.3g}, "
                   f"+{c['kappa_up']:.3g}/decade up, +{c['kappa_down']:.3g}/decade down")
        else:
            how = f"{self.interval_method} (not calibrated on runs outside the fit set)"
        head = (f"{law.name}: {law.formula}  ({law.source})\n"
                f"fitted by {self.method} on {self.n_points} points; prediction intervals: {how}")
        return head + "\n" + self.summary().to_string(index=False, float_format=lambda v: f"{v:.6g}")

    # -- serialization --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        law = LAWS[self.law]
        d = {
            "law": self.law, "formula": law.formula, "source": law.source, "method": self.method,
            "params": self.params, "stderr": self.stderr, "n_points": self.n_points, "objective": self.objective,
            "level": self.level, "interval_method": self.interval_method,
            "interval": {p: list(v) for p, v in self.intervals.items()},
            "residual_space": self.residual_space, "noise_sd": self.noise_sd, "calibrated": self.calibrated, **self.meta,
        }
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_dict()
        if self.fit_inputs is not None:
            d["fit_inputs"] = np.asarray(self.fit_inputs).tolist()
        if self.samples is not None:
            d["bootstrap"] = {"samples": self.samples.tolist(), "noise": self.noise.tolist()}
        if self.loglinear is not None:
            d["loglinear"] = {k: np.asarray(v).tolist() for k, v in self.loglinear.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        known = {"law", "formula", "source", "method", "params", "stderr", "n_points", "objective", "level",
                 "interval_method", "interval", "residual_space", "bootstrap", "loglinear", "noise_sd", "calibrated",
                 "calibration", "fit_inputs"}
        boot = d.get("bootstrap")
        return cls(
            law=d["law"], method=d["method"], params=dict(d["params"]), stderr=dict(d["stderr"]),
            n_points=d["n_points"], objective=d["objective"], level=d["level"],
            interval_method=d["interval_method"],
            samples=None if boot is None else np.array(boot["samples"], dtype=float),
            noise=None if boot is None else np.array(boot["noise"], dtype=float),
            residual_space=d["residual_space"], loglinear=d.get("loglinear"), noise_sd=d.get("noise_sd", NAN),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
            fit_inputs=None if d.get("fit_inputs") is None else np.asarray(d["fit_inputs"], dtype=float),
            meta={k: v for k, v in d.items() if k not in known},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)
