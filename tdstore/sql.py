"""DuckDB over a store: a read-only, sandboxed connection with one view per stored table.

Views read the store's Parquet files in place; JSON documents and Zarr attributes become
small in-memory tables. A stage that has not run yet gives an empty view with the declared
columns, so a query never fails just because of that::

    table = query(store, "SELECT label_set, count(*) AS n FROM labels GROUP BY ALL")
    con = connect(store); con.sql("SELECT rank_name(taxon_id, 'family') FROM labels LIMIT 3")

Sandbox: the user's text must be read statements only (SELECT, WITH, FROM, VALUES, DESCRIBE,
SHOW, SUMMARIZE, EXPLAIN); after the views exist, external access is switched off with only
the store's data files allowed, and the configuration is locked, so neither COPY, ATTACH,
EXPORT nor read_csv('/etc/passwd') can get out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from tdstore.errors import ConflictError, TdstoreError, UsageError
from tdstore.schemas import METADATA_REFHASH
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata
from tdstore.taxonomy import RANKS

# Column names every view with a taxon_id gains from the lineages table.
LINEAGE_COLUMNS: tuple[str, ...] = ("taxon_rank", "taxon_name", *RANKS)

VIEWS: dict[str, str] = {
    "contigs": "core/contigs.parquet: every contig (filtered ones have kept = false, row null)",
    "taxonomy": "taxonomy.parquet: taxon_id, rank, name, parent_id",
    "lineages": "one row per taxon: taxon_id, rank, name, parent_id, depth, lineage, "
    "and one name column per rank (domain ... species; null below the taxon's depth)",
    "labels": "labels/*.parquet with label_set, plus taxon_rank, taxon_name, domain ... species",
    "soft_labels": "soft_labels/*.parquet with soft_label_set, plus the lineage columns",
    "embeddings": "one row per embedding set (metadata only, no vectors)",
    "runs": "one row per runs/<name>/run.json, config flattened into columns",
    "metrics": "runs/*/metrics.parquet and metrics/*.parquet",
    "predictions": "runs/*/predictions.parquet with run, plus the lineage columns",
    "subsets": "one row per subset: name, sql, sql_hash, n_rows, created, refhash, current",
    "subset_rows": "name, row: the rows of every subset",
    "calls": "one row per kept contig: row, contig_id, sample, length, gc, n_count, then "
    "label_<set>_*, soft_<set>_* and pred_<run>_* columns (taxon_id, domain ... species, depth, "
    "lineage_code; novel / confidence, p_<rank> / score_<rank>); no join needed",
}
MACROS: dict[str, str] = {
    "rank_name(taxon_id, rank)": "name of the taxon's ancestor at a rank, e.g. 'family' "
    "(an unknown rank is an error)",
    "rank_depth(rank)": "1 for domain ... 7 for species: lineage_probs[rank_depth('genus')]",
    "rank_agreement(a, b)": "table: per rank, contigs both sources call to it and the share "
    "where they agree; a, b name calls' sources, e.g. 'label_mmseqs', 'soft_teacher'",
}

# Declared columns of the metadata tables built in Python (more may follow from the JSON).
_RUN_COLUMNS: dict[str, pa.DataType] = {
    "name": pa.string(),
    "status": pa.string(),
    "created": pa.string(),
    "labels": pa.string(),
    "soft_labels": pa.string(),
    "subset": pa.string(),
    "alpha": pa.float64(),
    "temperature": pa.float64(),
    "epochs": pa.int64(),
    "seed": pa.int64(),
    "config": pa.string(),
}
_EMBEDDING_COLUMNS: dict[str, pa.DataType] = {
    "name": pa.string(),
    "model": pa.string(),
    "hidden": pa.int64(),
    "pooling": pa.string(),
    "fingerprint": pa.string(),
    "n_rows": pa.int64(),
    "complete": pa.bool_(),
    "problem": pa.string(),
    "details": pa.string(),
}
_SUBSET_COLUMNS: dict[str, pa.DataType] = {
    "name": pa.string(),
    "sql": pa.string(),
    "sql_hash": pa.string(),
    "n_rows": pa.int64(),
    "created": pa.string(),
    "refhash": pa.string(),
    "current": pa.bool_(),
}

_READ_STATEMENTS = {"SELECT"}
INTERNAL = "tdstore_internal"
CALLS_DB = "tdstore_calls"
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(.*)$", re.IGNORECASE | re.DOTALL)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def check_read_only(sql: str) -> None:
    """Refuse anything but read statements (COPY, ATTACH, SET, CREATE, PRAGMA ...)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL: {_one_line(exc)}") from None
    if not statements:
        raise UsageError("SQL: empty query")
    for statement in statements:
        kind = statement.type.name
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs its statement: the statement inside must be a read too.
            match = _EXPLAIN.match(statement.query)
            if match:
                check_read_only(match.group(1))
                continue
        if kind not in _READ_STATEMENTS:
            raise UsageError(
                f"SQL: only read queries are allowed (SELECT, WITH, FROM, DESCRIBE, SHOW, "
                f"SUMMARIZE, EXPLAIN), not {kind}; write results with --output instead"
            )


def connect(store: Store, *, calls: str = "build") -> Any:
    """A DuckDB connection with every view of ``store``, sandboxed and locked.

    ``calls``: "build" makes the ``calls`` cache current first (if the store can be
    written); "use" attaches it only if it is already current. Either way a stale or
    missing cache gives ``calls`` as the (slower) join over the views.
    """
    import duckdb

    if calls not in {"build", "use"}:
        raise ValueError(calls)
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        allowed = build_views(store, con)
        _calls_view(store, con, build=calls == "build")
        con.execute(f"SET allowed_paths = [{', '.join(quote(p) for p in sorted(allowed))}]")
        con.execute("SET allowed_directories = []")
        # No spill directory: DuckDB would otherwise allow writes under ./.tmp.
        con.execute("SET temp_directory = ''")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def build_views(store: Store, con: Any) -> set[str]:
    """Create every view but ``calls`` on ``con`` (no sandbox); returns the files they read."""
    return _Views(store, con).build()


def _calls_view(store: Store, con: Any, *, build: bool) -> None:
    """``calls`` from the current cache (attached read-only), else as the join it caches."""
    from tdstore import calls

    found = calls.sources(store) if store.is_ingested else []
    # No cache and none wanted: skip even the key (a stat and footer read per source).
    if store.is_ingested and (build or calls.cache_path(store).exists()):
        try:
            key = calls.fingerprint(store, found)
        except OSError:  # a source replaced or dropped while we looked: no cache this time
            key = ""
        attached = bool(key) and calls.attach_current(con, store, key, CALLS_DB)
        if not attached and build and calls.refresh(store):
            attached = calls.attach_current(con, store, key, CALLS_DB)
        if attached:
            con.execute(f"CREATE VIEW {calls.NAME} AS SELECT * FROM {CALLS_DB}.{calls.NAME}")
            return
    con.execute(f"CREATE VIEW {calls.NAME} AS {calls.join_sql(found)}")


def execute(con: Any, sql: str, *, limit: int | None = None) -> pa.Table:
    """Run a user's read query on a :func:`connect` connection; DuckDB errors become UsageError."""
    import duckdb

    check_read_only(sql)
    try:
        relation = con.sql(sql)
        if relation is None:
            return pa.table({})
        if limit is not None:
            relation = relation.limit(limit)
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        message = _one_line(exc)
        if "disabled by configuration" in message or "configuration has been locked" in message:
            message += " (queries see only the store's views and cannot write files)"
        raise UsageError(f"SQL: {message}") from None


def column_types(con: Any, sql: str) -> dict[str, str]:
    """Column name -> DuckDB type of a user's read query, without running it."""
    import duckdb

    check_read_only(sql)
    try:
        # The newline: a trailing -- comment in the user's text must not hide the ')'.
        relation = con.sql(f"SELECT * FROM ({sql}\n) LIMIT 0")
        return {
            name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)
        }
    except duckdb.Error as exc:
        raise UsageError(f"SQL: {_one_line(exc)}") from None


def query(store: Store, sql: str, *, limit: int | None = None) -> pa.Table:
    """Run one read query against ``store``; returns an Arrow table."""
    check_read_only(sql)  # before connecting: a refused query builds no cache
    con = connect(store, calls=calls_mode(sql))
    try:
        return execute(con, sql, limit=limit)
    finally:
        con.close()


def calls_mode(sql: str) -> str:
    """Build the ``calls`` cache only for a query that reads it (a build takes a while)."""
    from tdstore.calls import referenced

    return "build" if referenced(sql) else "use"


def _one_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ----- views ----------------------------------------------------------------------------
class _Views:
    """Creates the views of one store on one connection; returns the files they read."""

    def __init__(self, store: Store, con: Any):
        self.store = store
        self.con = con
        self.allowed: set[str] = set()
        self._refhash = store.refhash if store.is_ingested else None

    def build(self) -> set[str]:
        # Building blocks live in their own schema so SHOW TABLES lists only the views.
        self.con.execute(f"CREATE SCHEMA {INTERNAL}")
        self._lineages()
        self._contigs()
        self._taxonomy()
        self._labelled(
            "labels", S.LABELS, "label_set", self._named_files("labels"), with_lineage=True
        )
        self._labelled(
            "soft_labels",
            S.SOFT_LABELS,
            "soft_label_set",
            self._named_files("soft_labels"),
            with_lineage=True,
        )
        runs = self._run_dirs()
        self._labelled(
            "predictions",
            S.PREDICTIONS,
            "run",
            [
                (n, d / "predictions.parquet")
                for n, d in runs
                if (d / "predictions.parquet").exists()
            ],
            with_lineage=True,
        )
        metric_files = [d / "metrics.parquet" for _, d in runs if (d / "metrics.parquet").exists()]
        metrics_dir = self.store.path / "metrics"
        if metrics_dir.is_dir():
            metric_files += sorted(
                p for p in metrics_dir.glob("*.parquet") if ".tmp-" not in p.name
            )
        base = self._union("metrics", S.METRICS, [(None, p) for p in metric_files], None)
        self.con.execute(f"CREATE VIEW metrics AS SELECT * FROM {base}")
        self._runs(runs)
        self._embeddings()
        self._subsets()
        return self.allowed

    # -- helpers
    def _table_from_arrow(self, name: str, table: pa.Table) -> None:
        self.con.register("_tdstore_tmp", table)
        try:
            self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM _tdstore_tmp")
        finally:
            self.con.unregister("_tdstore_tmp")

    def _parquet(self, path: Path, spec: Any, *, row_aligned: bool) -> str:
        """``read_parquet(...)`` of a checked file; the file becomes readable in the sandbox."""
        meta = read_metadata(path, spec)
        if row_aligned and self._refhash is not None:
            found = meta.get(METADATA_REFHASH, meta.get("refhash"))
            if found != self._refhash:
                raise ConflictError(
                    f"{path}: made for other store content (refhash {str(found)[:12]}, "
                    f"store {self._refhash[:12]}); re-create it or remove it"
                )
        resolved = str(path.resolve())
        self.allowed.add(resolved)
        return f"read_parquet({quote(resolved)})"

    def _empty(self, name: str, spec: Any) -> str:
        self._table_from_arrow(name, spec.arrow_schema().empty_table())
        return name

    def _named_files(self, kind: str) -> list[tuple[str, Path]]:
        return [
            (name, self.store.object_dir(kind) / f"{name}.parquet")
            for name in self.store.list_objects(kind, ".parquet")
        ]

    def _run_dirs(self) -> list[tuple[str, Path]]:
        folder = self.store.object_dir("runs")
        if not folder.is_dir():
            return []
        return sorted(
            (p.name, p)
            for p in folder.iterdir()
            if p.is_dir() and ".tmp-" not in p.name and not p.name.startswith(".")
        )

    def _union(
        self,
        view: str,
        spec: Any,
        files: list[tuple[str | None, Path]],
        name_column: str | None,
        *,
        row_aligned: bool = False,
    ) -> str:
        """A relation over several files of one schema (empty if none); returns its name."""
        base = f"{INTERNAL}.{view}_files"
        if not files:
            empty = self._empty(base, spec)
            if name_column:
                self.con.execute(
                    f"CREATE VIEW {base}_named AS SELECT CAST(NULL AS VARCHAR) AS {name_column},"
                    f" * FROM {empty} WHERE false"
                )
                return f"{base}_named"
            return empty
        parts = []
        for name, path in files:
            source = self._parquet(path, spec, row_aligned=row_aligned)
            label = f"{quote(name)} AS {name_column}, " if name_column and name is not None else ""
            parts.append(f"SELECT {label}* FROM {source}")
        self.con.execute(f"CREATE VIEW {base} AS " + " UNION ALL BY NAME ".join(parts))
        return base

    def _labelled(
        self,
        view: str,
        spec: Any,
        name_column: str,
        files: list[tuple[str, Path]],
        *,
        with_lineage: bool,
    ) -> None:
        base = self._union(view, spec, list(files), name_column, row_aligned=True)
        if not with_lineage:
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {base}")
            return
        extra = ", ".join(f'x."{c}"' for c in LINEAGE_COLUMNS)
        # Grouping by taxon_id proves the join key unique, so DuckDB's join elimination drops
        # the join from single-view queries that use no lineage column; a filter on a rank
        # column becomes a filter on the small build side (faster than a per-row lookup).
        lineage = ", ".join(
            ["any_value(rank) AS taxon_rank", "any_value(name) AS taxon_name"]
            + [f'any_value("{r}") AS "{r}"' for r in RANKS]
        )
        self.con.execute(
            f"CREATE VIEW {view} AS SELECT b.*, {extra} FROM {base} b LEFT JOIN "
            f"(SELECT taxon_id, {lineage} FROM lineages GROUP BY taxon_id) x "
            "ON x.taxon_id = b.taxon_id"
        )

    # -- the views
    def _lineages(self) -> None:
        import numpy as np

        taxonomy = self.store.taxonomy()
        ids = np.arange(len(taxonomy), dtype=np.int64)
        matrix = taxonomy.rank_matrix(ids)
        names = np.asarray(taxonomy.names, dtype=object)
        columns: dict[str, Any] = {
            "taxon_id": pa.array(ids),
            "rank": pa.array(taxonomy.ranks, pa.string()),
            "name": pa.array(taxonomy.names, pa.string()),
            "parent_id": pa.array([None if p < 0 else p for p in taxonomy.parents], pa.int64()),
            "depth": pa.array((matrix >= 0).sum(axis=1).astype(np.int64)),
        }
        for k, rank in enumerate(RANKS):
            col = matrix[:, k]
            mask = col < 0
            columns[rank] = pa.array(
                np.where(mask, None, names[np.where(mask, 0, col)]), pa.string()
            )
        self.con.register("_tdstore_tmp", pa.table(columns))
        try:
            ranks = ", ".join(f'"{r}"' for r in RANKS)
            self.con.execute(
                "CREATE TABLE lineages AS SELECT taxon_id, rank, name, parent_id, depth, "
                f"concat_ws(';', {ranks}) AS lineage, {ranks} FROM _tdstore_tmp ORDER BY taxon_id"
            )
        finally:
            self.con.unregister("_tdstore_tmp")
        # The key column has a name no caller uses: a subquery over lineages itself would
        # bind an argument spelled ``taxon_id`` to lineages' own column.
        ranks = ", ".join(f'"{r}"' for r in RANKS)
        self.con.execute(
            f"CREATE TABLE {INTERNAL}.rank_names AS "
            f"SELECT taxon_id AS tdstore_taxon_key, {ranks} FROM lineages"
        )
        cases = " ".join(f'WHEN {quote(r)} THEN n."{r}"' for r in RANKS)
        listed = ", ".join(quote(r) for r in RANKS)

        # A misspelt rank ('famly') is an error, not a column of NULLs that reads as
        # "no such ancestor"; a NULL rank gives NULL.
        def unknown(macro: str) -> str:
            return (
                f"error({quote(f'{macro}: unknown rank ' + chr(39))} || r::VARCHAR || "
                f"{quote(chr(39) + '; ranks are ' + ', '.join(RANKS))})"
            )

        valid = f"r IS NULL OR list_contains([{listed}], lower(r))"
        self.con.execute(
            f"CREATE MACRO rank_name(t, r) AS CASE WHEN {valid} THEN (SELECT CASE lower(r) "
            f"{cases} END FROM {INTERNAL}.rank_names n WHERE n.tdstore_taxon_key = t) "
            f"ELSE {unknown('rank_name')} END"
        )
        self.con.execute(
            f"CREATE MACRO rank_depth(r) AS CASE WHEN {valid} THEN "
            f"list_position([{listed}], lower(r)) ELSE {unknown('rank_depth')} END"
        )
        self._lineage_codes(taxonomy)

    def _lineage_codes(self, taxonomy: Any) -> None:
        """Depth and packed lineage per taxon (for calls), and the rank_agreement macro."""
        import numpy as np

        from tdstore import calls

        codes, depth, low = calls.lineage_codes(taxonomy)
        table = pa.table(
            {
                "taxon_id": pa.array(np.arange(len(codes), dtype=np.int64)),
                "depth": pa.array(depth.astype(np.int8)),
                "lineage_code": pa.array(codes, mask=codes < 0),
            }
        )
        self._table_from_arrow(f"{INTERNAL}.{calls.CODES_TABLE}", table)
        packed = bool(codes.size == 0 or codes.min() >= 0)
        body = calls.agreement_sql(low, packed=packed)
        self.con.execute(f"CREATE MACRO rank_agreement(a, b) AS TABLE {body}")

    def _contigs(self) -> None:
        path = self.store.core_dir / "contigs.parquet"
        if self.store.is_ingested and path.exists():
            source = self._parquet(path, S.CONTIGS, row_aligned=False)
            self.con.execute(f"CREATE VIEW contigs AS SELECT * FROM {source}")
        else:
            self._empty("contigs", S.CONTIGS)

    def _taxonomy(self) -> None:
        path = self.store.taxonomy_path
        if path.exists():
            source = self._parquet(path, S.TAXONOMY, row_aligned=False)
            self.con.execute(f"CREATE VIEW taxonomy AS SELECT * FROM {source}")
        else:
            self._empty("taxonomy", S.TAXONOMY)

    def _runs(self, runs: list[tuple[str, Path]]) -> None:
        from tdstore.store import read_document

        records = []
        for name, folder in runs:
            path = folder / "run.json"
            if not path.exists():
                continue  # a run being set up; it appears once run.json is published
            doc = read_document(path, S.RUN.name)
            record = {k: v for k, v in doc.items() if k not in {"schema", "schema_version"}}
            config = record.pop("config", {}) or {}
            flat = {"name": name, **_flatten(record)}
            for key, value in _flatten(config).items():
                flat[key if key not in flat else f"config_{key}"] = value
            _fill_declared(flat, _RUN_COLUMNS)
            flat["config"] = json.dumps(config, sort_keys=True, default=str)
            records.append(flat)
        self._table_from_arrow("runs", _records_table(records, _RUN_COLUMNS))

    def _embeddings(self) -> None:
        import importlib

        records = []
        module = importlib.import_module("tdstore.teacher.embed_store")
        for name in module.list_names(self.store):
            try:
                detail = dict(module.describe(self.store, name))
                record = {"name": name, **_flatten(detail)}
            except TdstoreError as exc:
                detail, record = {}, {"name": name, "problem": str(exc)}
            record["details"] = json.dumps(detail, sort_keys=True, default=str)
            records.append(record)
        self._table_from_arrow("embeddings", _records_table(records, _EMBEDDING_COLUMNS))

    def _subsets(self) -> None:
        from tdstore import subsets

        records, files = [], []
        for name in subsets.list_names(self.store):
            path = subsets.subset_path(self.store, name)
            meta = read_metadata(path, S.SUBSET)
            refhash = meta.get(METADATA_REFHASH)
            records.append(
                {
                    "name": name,
                    "sql": meta.get("sql"),
                    "sql_hash": meta.get("sql_hash"),
                    "n_rows": meta.get("n_rows"),
                    "created": meta.get("created"),
                    "refhash": refhash,
                    "current": refhash == self._refhash,
                }
            )
            files.append((name, path))
        self._table_from_arrow("subsets", _records_table(records, _SUBSET_COLUMNS))
        base = self._union("subset_rows", S.SUBSET, list(files), "name")
        self.con.execute(f"CREATE VIEW subset_rows AS SELECT name, row FROM {base}")


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``a_b`` keys; lists stay as JSON text (columns must be scalar)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        column = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{column}_"))
        elif isinstance(value, list | tuple):
            out[column] = json.dumps(value, default=str)
        else:
            out[column] = value
    return out


def _fill_declared(record: dict[str, Any], declared: Mapping[str, Any]) -> None:
    """Fill a declared column from the one nested key it names (``alpha`` <- ``fit_alpha``)."""
    for column in declared:
        if record.get(column) is None:
            found = [k for k in record if k.endswith(f"_{column}") and record[k] is not None]
            if len(found) == 1:
                record[column] = record[found[0]]


def _records_table(records: Iterable[dict[str, Any]], declared: dict[str, pa.DataType]) -> pa.Table:
    """Declared columns first (typed, even when empty), then every other key seen."""
    records = list(records)
    keys = list(declared)
    for record in records:
        keys += [k for k in record if k not in keys]
    columns = {}
    for key in keys:
        values = [r.get(key) for r in records]
        columns[key] = _column(values, declared.get(key))
    return pa.table(columns) if columns else pa.table({})


def _column(values: list[Any], declared: pa.DataType | None) -> pa.Array:
    if declared is not None:
        try:
            return pa.array(values, declared)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass
    try:
        array = pa.array(values)
        # A key that is null in every document: text, not DuckDB's unusable NULL type.
        return array.cast(pa.string()) if pa.types.is_null(array.type) else array
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed types across documents: keep them readable as text.
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values])


# ----- writing results ------------------------------------------------------------------------
FORMATS = ("table", "csv", "tsv", "json", "parquet")
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}


def format_for(output: Path | None, fmt: str | None) -> str:
    """The output format: as given, else from the output's suffix, else a terminal table."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
        if fmt == "parquet" and output is None:
            raise UsageError("--format parquet needs --output FILE")
        if fmt == "table" and output is not None:
            raise UsageError("--format table is for terminals; write csv, tsv, json or parquet")
        return fmt
    if output is None:
        return "table"
    inferred = _SUFFIX_FORMATS.get(output.suffix.lower())
    if inferred is None:
        raise UsageError(f"{output}: cannot tell the format from the suffix; give --format")
    return inferred


def _plain(table: pa.Table, *, nan_to_null: bool) -> pa.Table:
    """Nested columns as DuckDB's text form ([1, 2]); NaN -> null for JSON (not valid JSON)."""
    import pyarrow.compute as pc

    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_nested(field.type) and not nan_to_null:
            column = pa.chunked_array(
                [
                    pa.array(
                        [None if v is None else _text(v) for v in column.to_pylist()], pa.string()
                    )
                ]
            )
        elif nan_to_null and pa.types.is_floating(field.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join("NULL" if v is None else _text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"'{k}': {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def render(table: pa.Table, fmt: str) -> bytes:
    """``table`` as csv, tsv or json (one JSON object per line)."""
    if fmt in {"csv", "tsv"}:
        import pyarrow.csv as pcsv

        plain = _plain(table, nan_to_null=False)
        # TSV unquoted as tools expect it, unless a value holds a tab or newline.
        if fmt == "csv":
            sink = pa.BufferOutputStream()
            pcsv.write_csv(plain, sink, pcsv.WriteOptions(quoting_style="needed"))
            return sink.getvalue().to_pybytes()
        # TSV unquoted, as tools expect it, unless a value holds a tab or newline.
        for quoting in ("none", "needed"):
            sink = pa.BufferOutputStream()
            options = pcsv.WriteOptions(delimiter="\t", quoting_style=quoting, include_header=False)
            try:
                pcsv.write_csv(plain, sink, options)
            except pa.ArrowInvalid:
                continue
            header = "\t".join(table.column_names) + "\n"
            return header.encode() + sink.getvalue().to_pybytes()
    if fmt == "json":
        lines = [json.dumps(r, default=str) for r in _plain(table, nan_to_null=True).to_pylist()]
        return ("\n".join(lines) + ("\n" if lines else "")).encode()
    raise UsageError(f"format {fmt!r} cannot be rendered as text")


def write_output(table: pa.Table, fmt: str, output: Path, *, store: Store | None = None) -> None:
    """Publish a result file atomically (written here, never by DuckDB).

    With ``store``, a path inside it is refused (:func:`tdstore.outputs.check_output_file`):
    the result would replace or sit among the store's own files.
    """
    import pyarrow.parquet as pq

    from tdstore.atomic import atomic_path, write_bytes_atomic

    if store is not None:
        from tdstore.outputs import check_output_file

        check_output_file(output, option="--output", store=store)

    if fmt == "parquet":
        with atomic_path(output, durable=False) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    else:
        write_bytes_atomic(output, render(table, fmt))
