"""Stage 3, evaluate: every finished run scored on multiple-choice tasks.

- :mod:`~scaling.evaluate.tasks`: the task format and the built-in tasks made from held-out text;
- :mod:`~scaling.evaluate.scoring`: log-likelihood scoring of a run's final weights;
- :mod:`~scaling.evaluate.export`: a run as a Hugging Face transformers model (GPT-2), for the field's tools;
- :mod:`~scaling.evaluate.harness`: lm-evaluation-harness tasks, scored offline on that export.
"""
