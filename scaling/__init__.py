"""Scaling-law studies of language models: one config file → trained runs → tables → fitted laws → a report.

The pipeline's stages, each a subpackage, in the order a study runs them:

- :mod:`scaling.study`: the study file, checked, and the runs it defines;
- :mod:`scaling.data`: datasets → token arrays (stage 1, prepare);
- :mod:`scaling.train`: one run (stage 2);
- :mod:`scaling.evaluate`: a run scored on downstream tasks (stage 3);
- :mod:`scaling.store`: finished runs → tables → database (stage 4, collect and database);
- :mod:`scaling.fit`: laws fitted to the tables, with calibrated intervals (stage 5);
- :mod:`scaling.report`: figures and a summary (stage 6);
- :mod:`scaling.testbeds`: published data, importers and synthetic studies;
- :mod:`scaling.cli`: the ``scaling`` command on top; :mod:`scaling.io`: atomic files, shared by all;
  :mod:`scaling.forkserver`: a local study's jobs forked from one process that has imported torch.

Imports go one way, down this list read from the bottom: a stage imports only the stages it builds on
(:data:`LAYERS`, checked by tests/test_imports.py). The study comes first in the pipeline but last
among the stages in that order, because checking a study asks every stage what it needs.
"""

__version__ = "0.1.0"

# each package may import only packages of earlier layers (and its own modules)
LAYERS = ("io", "forkserver", "data", "train", "evaluate", "store", "fit", "report", "study", "testbeds", "cli")
