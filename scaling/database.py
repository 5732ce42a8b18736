"""The DuckDB side of the results store: one study's database, all studies at once, read-only queries.

``results/<study>/scaling.duckdb`` holds a table for every table of
:mod:`scaling.schema` (empty when the study has no rows for it, e.g.
``downstream``) and ``schema_columns``, the documentation of every column. It
is a copy, not views onto the Parquet files, so the file is self-contained: it
can be moved, shared or opened from any directory.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from scaling import schema
from scaling.io import atomic_path

DOCS_TABLE = "schema_columns"
# statements `scaling sql` runs: queries, never writes
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "SET"}


class ReadOnlyError(ValueError):
    """A statement that would write, given to a read-only query."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_database(tables_dir: str | Path, db_path: str | Path) -> dict[str, int]:
    """Copy every table of ``tables_dir`` into a new DuckDB file, replacing ``db_path`` atomically.

    Each Parquet file is migrated to the current schema version and checked
    against its schema first; a table without a file is created empty. Returns
    the number of rows of each table.
    """
    tables_dir = Path(tables_dir)
    rows = {}
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # DuckDB creates the file itself
        con = duckdb.connect(str(tmp))
        con.execute("BEGIN")  # one transaction: one write to disk, not one per statement
        for name, (doc, cols) in schema.TABLES.items():
            path = tables_dir / f"{name}.parquet"
            data = schema.read_table(path, name) if path.exists() else schema.empty(name)
            # dictionary-encoded strings would become ENUMs; store plain strings
            data = pa.Table.from_arrays(
                [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in data.columns],
                names=data.column_names)
            con.register("_data", data)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM _data")
            con.unregister("_data")
            con.execute(f"COMMENT ON TABLE {name} IS {_sql_str(doc + f' (schema version {schema.SCHEMA_VERSION})')}")
            for c in cols:
                con.execute(f"COMMENT ON COLUMN {name}.{_quote(c.name)} IS {_sql_str(c.doc)}")
            rows[name] = data.num_rows
        con.register("_docs", schema.docs())
        con.execute(f"CREATE TABLE {DOCS_TABLE} AS SELECT * FROM _docs")
        con.execute("COMMIT")
        con.close()
    return rows


def check_read_only(query: str) -> None:
    """Raise :class:`ReadOnlyError` unless every statement of ``query`` only reads."""
    for statement in duckdb.extract_statements(query):
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise ReadOnlyError(
                f"{kind} statements are not allowed: scaling sql opens the results read-only and runs "
                f"queries ({', '.join(sorted(READ_ONLY_STATEMENTS))}), never statements that write; "
                f"to change results, change the study and rerun snakemake"
            )


def open_study(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to one study's database."""
    return duckdb.connect(str(db_path), read_only=True)


def open_all(root: str | Path = "results") -> duckdb.DuckDBPyConnection:
    """All studies under ``root`` at once.

    An in-memory connection that attaches every ``<root>/<study>/scaling.duckdb``
    read-only as the schema ``<study>`` (so ``smoke.runs`` is one study's runs),
    and defines each table name as a view over every study's rows, with a
    ``study`` column first (``SELECT study, count(*) FROM runs GROUP BY study``).
    """
    dbs = sorted(Path(root).glob("*/scaling.duckdb"))
    if not dbs:
        raise FileNotFoundError(f"no study database under {Path(root).resolve()}/*/scaling.duckdb")
    con = duckdb.connect()
    for db in dbs:
        con.execute(f"ATTACH {_sql_str(str(db))} AS {_quote(db.parent.name)} (READ_ONLY)")
    for name in (*schema.TABLES, DOCS_TABLE):
        parts = [f"SELECT {_sql_str(db.parent.name)} AS study, * FROM {_quote(db.parent.name)}.{name}" for db in dbs
                 if con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                                [db.parent.name, name]).fetchone()[0]]
        if parts:
            con.execute(f"CREATE TEMP VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame | None:
    """Run a read-only ``sql`` on ``con``: its result, or None for a statement without one (e.g. SET)."""
    check_read_only(sql)
    rel = con.sql(sql)
    return None if rel is None else rel.df()
