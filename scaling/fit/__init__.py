"""Stage 5, fit: scaling laws fitted to the runs, with calibrated intervals and diagnostics.

- :mod:`~scaling.fit.laws`: the laws as pure functions, with formula and source;
- :mod:`~scaling.fit.estimators`, :mod:`~scaling.fit.bootstrap`, :mod:`~scaling.fit.result`: fitting, resampling,
  the fitted law;
- :mod:`~scaling.fit.overtraining`, :mod:`~scaling.fit.downstream`, :mod:`~scaling.fit.chinchilla`,
  :mod:`~scaling.fit.optimal_lr`: each law's fit;
- :mod:`~scaling.fit.calibration`, :mod:`~scaling.fit.diagnostics`: intervals calibrated on out-of-sample errors,
  and what is wrong with a fit;
- :mod:`~scaling.fit.fit_set`: the default fit set, and how many distinct points a law needs;
- :mod:`~scaling.fit.tables`: fitting a table of runs (fit set, targets, backtests);
- :mod:`~scaling.fit.plan`: which runs to train next: the candidates that most narrow the targets' intervals per FLOP;
- :mod:`~scaling.fit.stage`: the pipeline's fit stage; :mod:`~scaling.fit.command`: ``scaling fit`` and
  ``scaling backtest``.
"""
