"""Published data: the testbed of Gadre et al. (2024) shipped with the package, importers, synthetic studies.

- :mod:`~scaling.testbeds.gadre`: the shipped testbed and the paper's fit sets;
- :mod:`~scaling.testbeds.importers`: a published testbed or any CSV → a study's tables and database;
- :mod:`~scaling.testbeds.synthetic`: studies of known laws, for tests and benchmarks;
- :mod:`~scaling.testbeds.replay`: a study that plans itself (`scaling plan`), replayed on a testbed.
"""
