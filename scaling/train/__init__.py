"""Stage 2, train: one run of a GPT of a given shape on D = M·N tokens.

- :mod:`~scaling.train.model`: the model, readable top to bottom;
- :mod:`~scaling.train.loop`: the training loop and a run's outputs;
- :mod:`~scaling.train.watch`: the log's header, the curve in TensorBoard (optional);
- :mod:`~scaling.train.checkpoint`, :mod:`~scaling.train.preemption`, :mod:`~scaling.train.distributed`: resume,
  stopping on a signal, DDP;
- :mod:`~scaling.train.schedules`, :mod:`~scaling.train.stability`: the learning rate, divergence;
- :mod:`~scaling.train.shapes`, :mod:`~scaling.train.flops`: shapes from parameter counts, compute;
- :mod:`~scaling.train.ladder`: runs of several budgets as one constant-LR trunk and a cooldown each.
"""
