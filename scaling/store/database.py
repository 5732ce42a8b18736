"""The DuckDB side of the results store: one study's database, all studies at once, read-only queries.

``results/<study>/scaling.duckdb`` holds a table for every table of
:mod:`scaling.store.schema` (empty when the study has no rows for it, e.g.
``downstream``) and ``schema_columns``, the documentation of every column. It
is a copy, not views onto the Parquet files, so the file is self-contained: it
can be moved, shared or opened from any directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from scaling.store import schema
from scaling.io import atomic_path

DOCS_TABLE = "schema_columns"
# statements `scaling sql` runs: queries. This is the first, friendlier refusal; the guarantee that a query writes
# nothing is the engine's own (QUERY_CONFIG and LOCK_DOWN below)
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "SET"}
READ_ONLY = ("scaling sql runs queries on the results and nothing else: its DuckDB connection is read-only, with "
             "file access, extensions and settings locked; to change results, change the study and rerun snakemake")
# DuckDB settings of a `scaling sql` connection, from its start
QUERY_CONFIG = {
    "autoload_known_extensions": False,  # no extension loads …
    "autoinstall_known_extensions": False,  # … or installs itself for a query that names it
    "allow_persistent_secrets": False,  # CREATE PERSISTENT SECRET would write ~/.duckdb/stored_secrets/
    "temp_directory": "",  # a query that outgrows memory fails instead of spilling to disk
}
# and once its databases are attached and its views made, in this order:
LOCK_DOWN = (
    # no file read or written by a statement: COPY, EXPORT, read_csv/read_text/…, ATTACH, INSTALL, LOAD
    "SET enable_external_access = false",
    # nor the study files DuckDB then still allows itself, to reattach one read-write after a DETACH
    "SET disabled_filesystems = 'LocalFileSystem'",
    # and no setting changes after this one: not these, nor a query log, profiling output or logging to a file
    "SET lock_configuration = true",
)
# what DuckDB says when the lock-down refuses a statement (besides a PermissionException)
REFUSED = re.compile(r"the configuration has been locked|read-only mode|Persistent secrets are disabled"
                     r"|exists in the \w+ extension")


class ReadOnlyError(ValueError):
    """A statement that would write or touch a file, given to a read-only query."""


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
    """Raise :class:`ReadOnlyError` unless every statement of ``query`` is of a kind that only reads."""
    try:
        kinds = [statement.type.name for statement in duckdb.extract_statements(query)]
    except ValueError:  # a statement type the duckdb module has no name for (UPDATE EXTENSIONS in duckdb 2.0)
        kinds = ["unrecognized"]
    refused = [kind for kind in kinds if kind not in READ_ONLY_STATEMENTS]
    if refused:
        raise ReadOnlyError(f"{refused[0]} statements are not run (only {', '.join(sorted(READ_ONLY_STATEMENTS))}): "
                            f"{READ_ONLY}")


def _lock_down(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    for statement in LOCK_DOWN:
        con.execute(statement)
    return con


def open_study(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to one study's database, with file access, extensions and settings locked."""
    return _lock_down(duckdb.connect(str(db_path), read_only=True, config=QUERY_CONFIG))


def open_all(root: str | Path = "results") -> duckdb.DuckDBPyConnection:
    """All studies under ``root`` at once, locked down as :func:`open_study`.

    An in-memory connection that attaches every ``<root>/<study>/scaling.duckdb``
    read-only as the schema ``<study>`` (so ``smoke.runs`` is one study's runs),
    and defines each table name as a view over every study's rows, with a
    ``study`` column first (``SELECT study, count(*) FROM runs GROUP BY study``).
    """
    dbs = sorted(Path(root).glob("*/scaling.duckdb"))
    if not dbs:
        raise FileNotFoundError(f"no study database under {Path(root).resolve()}/*/scaling.duckdb")
    con = duckdb.connect(config=QUERY_CONFIG)
    for db in dbs:
        con.execute(f"ATTACH {_sql_str(str(db))} AS {_quote(db.parent.name)} (READ_ONLY)")
    # every database of the connection read-only: a study becomes the default, the in-memory one goes
    con.execute(f"USE {_quote(dbs[0].parent.name)}")
    con.execute("DETACH memory")
    for name in (*schema.TABLES, DOCS_TABLE):
        parts = [f"SELECT {_sql_str(db.parent.name)} AS study, * FROM {_quote(db.parent.name)}.{name}" for db in dbs
                 if con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                                [db.parent.name, name]).fetchone()[0]]
        if parts:
            con.execute(f"CREATE TEMP VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))
    return _lock_down(con)


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame | None:
    """Run a read-only ``sql`` on ``con``: its result, or None for a statement without one (e.g. SET).

    A statement that would write, touch a file, load an extension or change a setting raises
    :class:`ReadOnlyError`, from :func:`check_read_only` or from the engine's own refusal; a mistake in the
    query raises DuckDB's error.
    """
    check_read_only(sql)
    try:
        rel = con.sql(sql)
        return None if rel is None else rel.df()
    except duckdb.Error as e:
        if isinstance(e, duckdb.PermissionException) or REFUSED.search(str(e)):
            raise ReadOnlyError(f"DuckDB refused it ({str(e).splitlines()[0]}): {READ_ONLY}") from None
        raise
