"""Saved subsets: the rows a student trains on, with the SQL that chose them.

A subset is ``subsets/<name>.parquet``: the sorted unique rows, and in its metadata the SQL
text, its sha256, the store's refhash and the creation time, so a run can say exactly what
it trained on and a subset made against other store content is refused::

    create(store, "gut-bacteroidales", where="\"order\" = 'o__Bacteroidales'", labels="mmseqs")
    rows = load_rows(store, "gut-bacteroidales")   # np.ndarray[int64], sorted

``--where`` expressions see one relation, ``subset_source``: the kept contigs (row,
contig_id, sample, length, gc, n_count) and, with ``labels=NAME``, that label set's
taxon_id, novel, taxon_rank, taxon_name, domain, phylum, class, "order", family, genus,
species (null for unlabelled contigs; read from the ``calls`` view, no join). Every view
of ``tdstore sql`` can be used in sub-queries, e.g.
``row IN (SELECT row FROM calls WHERE soft_teacher_confidence > 0.9)``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tdstore.errors import ConflictError, IncompleteError, TdstoreError, UsageError
from tdstore.schemas import METADATA_REFHASH
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata, read_table, write_table
from tdstore.taxonomy import RANKS

SUFFIX = ".parquet"
CONTIG_COLUMNS = ("row", "contig_id", "sample", "length", "gc", "n_count")
LABEL_COLUMNS = ("taxon_id", "novel", "taxon_rank", "taxon_name", *RANKS)
_SHOW_UNKNOWN = 5


def subset_path(store: Store, name: str) -> Path:
    return store.named_path("subsets", name, SUFFIX)


def list_names(store: Store) -> list[str]:
    return store.list_objects("subsets", SUFFIX)


def where_sql(where: str, labels: str | None = None, *, key: str | None = None) -> str:
    """The full SELECT a ``--where`` expression stands for (stored with the subset).

    ``key``: the label set's name as ``calls`` spells it in column names (default
    :func:`tdstore.calls.column_key`; :func:`create` asks the store).
    """
    if labels is None:
        contig = ", ".join(f"c.{c}" for c in CONTIG_COLUMNS)
        source = f"SELECT {contig} FROM contigs c WHERE c.kept"
    else:
        from tdstore.calls import column_key, ident

        spelt = column_key(labels) if key is None else key

        # The label set's columns of the calls view: no join of contigs with labels.
        def col(field: str) -> str:
            return ident(f"label_{spelt}_{field}")

        ranks = ", ".join(col(r) for r in RANKS)
        listed = ", ".join(f"'{r}'" for r in ("root", *RANKS))
        derived = {
            "taxon_rank": f"[{listed}][{col('depth')} + 1]",
            "taxon_name": f"CASE {col('depth')} WHEN 0 THEN 'root' ELSE [{ranks}][{col('depth')}] END",
        }
        label = ", ".join(f"{derived.get(c, col(c))} AS {ident(c)}" for c in LABEL_COLUMNS)
        source = f"SELECT {', '.join(CONTIG_COLUMNS)}, {label} FROM calls"
    return f"WITH subset_source AS ({source})\nSELECT row FROM subset_source WHERE ({where}\n)"


def select_rows(store: Store, sql: str) -> tuple[np.ndarray, dict[str, int]]:
    """Run a query returning ``row`` or ``contig_id``; sorted unique kept rows and counts.

    Filtered contigs (no row) are dropped and counted; unknown contig ids are an error.
    """
    from tdstore import sql as tsql

    tsql.check_read_only(sql)
    if len(_statements(sql)) != 1:
        raise UsageError("subset SQL must be exactly one SELECT statement")
    con = tsql.connect(store, calls=tsql.calls_mode(sql))
    try:
        # Every wrapper ends the user's text with a newline: a trailing -- comment would
        # otherwise swallow the closing parenthesis.
        columns = tsql.column_types(con, sql)
        if "row" in columns:
            _require_type(columns, "row", _INTEGER_TYPES, "an integer")
            table = tsql.execute(con, f"SELECT row FROM ({sql}\n)")
            rows = table.column("row")
            dropped = rows.null_count
            values = rows.drop_null().to_numpy().astype(np.int64)
            n = store.n_contigs if store.is_ingested else 0
            bad = values[(values < 0) | (values >= n)]
            if bad.size:
                raise UsageError(
                    f"subset SQL returned row {int(bad[0])} outside the store (0..{n - 1})"
                )
        elif "contig_id" in columns:
            _require_type(columns, "contig_id", {"VARCHAR"}, "text (VARCHAR)")
            table = tsql.execute(
                con,
                f"SELECT q.contig_id, c.row, c.contig_id IS NOT NULL AS known FROM "
                f"(SELECT contig_id FROM ({sql}\n)) q LEFT JOIN contigs c ON c.contig_id = q.contig_id",
            )
            known = table.column("known").to_numpy(zero_copy_only=False)
            if not known.all():
                unknown = table.column("contig_id").filter(pa.array(~known)).to_pylist()
                raise UsageError(
                    f"subset SQL returned {len(unknown)} contig id(s) not in the store, e.g. "
                    + ", ".join(repr(u) for u in unknown[:_SHOW_UNKNOWN])
                )
            rows = table.column("row")
            dropped = rows.null_count
            values = rows.drop_null().to_numpy().astype(np.int64)
        else:
            raise UsageError(
                f"subset SQL must return a column named row or contig_id (got {', '.join(columns)})"
            )
    finally:
        con.close()
    unique = np.unique(values)
    return unique, {"filtered_dropped": int(dropped), "duplicates": int(values.size - unique.size)}


# DuckDB's integer types: a row must be one (1.7 would be truncated, '0' parsed).
_INTEGER_TYPES = {
    f"{sign}{width}"
    for sign in ("", "U")
    for width in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
}


def _require_type(columns: dict[str, str], name: str, allowed: set[str], what: str) -> None:
    if columns[name] not in allowed:
        raise UsageError(f"subset SQL: column {name} must be {what}, not {columns[name]}")


def _statements(sql: str) -> list[Any]:
    import duckdb

    return list(duckdb.extract_statements(sql))


def create(
    store: Store,
    name: str,
    *,
    where: str | None = None,
    sql: str | None = None,
    labels: str | None = None,
    overwrite: bool = False,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Select rows with ``where`` (over ``subset_source``) or ``sql`` and save them."""
    if (where is None) == (sql is None):
        raise UsageError("give exactly one of --where EXPR or --sql QUERY")
    if labels is not None and where is None:
        raise UsageError("--labels applies to --where only (join labels yourself in --sql)")
    if labels is not None and labels not in store.label_sets():
        known = ", ".join(store.label_sets()) or "none"
        raise UsageError(f"no label set {labels!r} (known: {known})")
    path = subset_path(store, name)
    refhash = store.refhash  # raises IncompleteError before any work if not ingested
    if where is not None:
        text = where_sql(where, labels, key=_label_key(store, labels))
    else:
        text = str(sql).strip().rstrip(";")
    with store.lock(f"subset-{name}"):
        if path.exists() and not overwrite:
            raise ConflictError(f"{path}: subset {name!r} exists; use --overwrite to replace it")
        try:
            rows, counts = select_rows(store, text)
        except UsageError as exc:
            if where is not None and labels is None and "not found" in str(exc):
                raise UsageError(
                    f"{exc} (--where sees {', '.join(CONTIG_COLUMNS)}; label columns need "
                    "--labels NAME)"
                ) from None
            raise
        if rows.size == 0 and not allow_empty:
            raise UsageError(
                f"subset {name!r}: the query selected no rows, nothing to train on "
                "(use --allow-empty to save it anyway)"
            )
        meta = {
            "sql": text,
            "sql_hash": hashlib.sha256(text.encode()).hexdigest(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_rows": int(rows.size),
            "where": where,
            "labels": labels,
            **counts,
        }
        write_table(
            path,
            S.SUBSET,
            pa.table({"row": pa.array(rows, pa.int64())}),
            metadata=meta,
            refhash=refhash,
        )
    return {"name": name, "path": str(path), **meta}


def _label_key(store: Store, labels: str | None) -> str | None:
    """The label set's name as the store's ``calls`` columns spell it."""
    if labels is None:
        return None
    from tdstore import calls

    return next(s.key for s in calls.sources(store) if s.kind == "label" and s.name == labels)


def show(store: Store, name: str) -> dict[str, Any]:
    """Everything recorded about a subset, plus whether it matches the store's content."""
    meta = read_metadata(_require(store, name), S.SUBSET)
    refhash = meta.pop(METADATA_REFHASH, None)
    meta = {k: v for k, v in meta.items() if not k.startswith("tdstore.schema")}
    current = store.is_ingested and refhash == store.refhash
    return {"name": name, **meta, "refhash": refhash, "current": current}


def drop(store: Store, name: str) -> None:
    path = _require(store, name)
    with store.lock(f"subset-{name}"):
        path.unlink()


def load_rows(store: Store, name: str) -> np.ndarray:
    """The subset's sorted rows; ConflictError if it was made for other store content."""
    path = _require(store, name)
    table, meta = read_table(path, S.SUBSET)
    store.check_refhash(meta, path)
    return table.column("row").to_numpy().astype(np.int64, copy=False)


def describe(store: Store, name: str) -> dict[str, Any]:
    info = show(store, name)
    query = " ".join(str(info.get("where") or info.get("sql") or "").split())  # one line
    return {
        "rows": info.get("n_rows"),
        "created": info.get("created"),
        "sql_hash": str(info.get("sql_hash"))[:12],
        "current": info["current"],
        "query": query if len(query) <= 60 else query[:57] + "...",
    }


def check(store: Store, name: str, deep: bool) -> list[str]:
    where = f"subsets/{name}{SUFFIX}"
    try:
        meta = read_metadata(_require(store, name), S.SUBSET)
        store.check_refhash(meta, where)
    except TdstoreError as exc:
        return [str(exc)]
    problems = []
    if hashlib.sha256(str(meta.get("sql", "")).encode()).hexdigest() != meta.get("sql_hash"):
        problems.append(f"{where}: sql_hash does not match the stored SQL")
    if deep:
        rows = load_rows(store, name)
        if rows.size != meta.get("n_rows"):
            problems.append(f"{where}: {rows.size} rows, metadata says {meta.get('n_rows')}")
        if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= store.n_contigs):
            problems.append(f"{where}: rows are not sorted, unique and inside 0..N-1")
    return problems


def _require(store: Store, name: str) -> Path:
    path = subset_path(store, name)
    if not path.exists():
        known = ", ".join(list_names(store)) or "none"
        raise IncompleteError(f"{store.path}: no subset {name!r} (known: {known})")
    return path
