"""Stage 6, report: figures and a Markdown summary from a study's tables.

- :mod:`~scaling.report.tables`: reading the tables and the views the report draws on;
- :mod:`~scaling.report.figures`, :mod:`~scaling.report.summary`: the figures and the summary;
- :mod:`~scaling.report.write`: writes both.

:data:`FIGURES` names the figures here, where importing it costs nothing (no matplotlib), so that the workflow's
rules declare the files the report writes from the same list.
"""

# name → (title, category in Snakemake's report), in the report's order; every one is always drawn (a placeholder
# where the study has no data for it), so the files are known before the data
FIGURES = {
    "loss_vs_compute": ("Loss vs compute", "Scaling laws"),
    "downstream_vs_loss": ("Downstream error vs loss", "Scaling laws"),
    "loss_vs_lr": ("Loss vs learning rate", "Learning rate"),
    "residuals": ("Fit residuals", "Scaling laws"),
    "optimal_lr": ("Optimal learning rate", "Learning rate"),
}
