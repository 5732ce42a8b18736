"""The study: one config file, checked before any job, and the runs it defines.

- :mod:`~scaling.study.config`: the one loader of a study (strict YAML, schema, every check that a run can run);
- :mod:`~scaling.study.runs`: run names and ids, the grid of runs, each run's spec, cross-references between sections;
- :mod:`~scaling.study.status`: the planned grid against what the results folder holds;
- :mod:`~scaling.study.plan`: ``scaling plan``, the runs to add to the study toward its targets, as grid blocks.
"""
