"""Stage 4, the results store: finished runs → Parquet tables → one DuckDB database.

- :mod:`~scaling.store.schema`: every table's documented columns, the schema version and migrations;
- :mod:`~scaling.store.collect`: runs on disk → the tables, incrementally, never losing the previous ones;
- :mod:`~scaling.store.database`: the tables → a self-contained database, and read-only SQL on it.
"""
