"""Stage 6, report: figures and a Markdown summary from a study's tables.

- :mod:`~scaling.report.tables`: reading the tables and the views the report draws on;
- :mod:`~scaling.report.figures`, :mod:`~scaling.report.summary`: the figures and the summary;
- :mod:`~scaling.report.write`: writes both.
"""
