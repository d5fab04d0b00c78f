"""The ``calls`` view: one row per kept contig, every source's call side by side, no join.

Every per-contig table is keyed by the dense ``row``, so comparing two label sets, a label
set and the teacher, or two runs needs no generic join: ``calls`` holds the contig columns
(row, contig_id, sample, length, gc, n_count) and, for each source, flat columns named
``<kind>_<name>_<field>`` ('-' and '.' of a name become '_', :func:`column_key`; two names
of one kind that would give the same columns are refused, :func:`refuse_key_clash`)::

    label_<set>_...   taxon_id, domain ... species, depth, lineage_code, novel
    soft_<set>_...    taxon_id, domain ... species, depth, lineage_code, confidence,
                      p_domain ... p_species  (lineage_probs by rank)
    pred_<run>_...    taxon_id, domain ... species, depth, lineage_code,
                      score_domain ... score_species  (lineage_scores by rank)

``depth`` is the taxon's rank (1 domain ... 7 species, 0 unclassified); ``lineage_code``
packs the lineage for ``rank_agreement`` (:func:`lineage_codes`).

A contig a source does not cover has nulls there. The columns are exactly what the join
of ``contigs`` with the ``labels``, ``soft_labels`` and ``predictions`` views gives
(:func:`join_sql`), materialised once into ``cache/calls.duckdb`` (DuckDB's own columnar
format: scans 3-4x faster than Parquet) in row order, streamed from the row-sorted
sources without joins::

    refresh(store)               # build if missing or stale; False if it cannot be written
    tdstore.sql.query(store, "SELECT * FROM rank_agreement('label_mmseqs', 'soft_teacher')")

The cache is keyed by its inputs: the store's refhash and, for the contigs, the taxonomy
and every source file, its size, mtime and Parquet footer (which holds the row group
statistics and the writer's metadata), plus the column layout, the DuckDB version and the
cache's schema version. A cache whose key differs from the inputs' is never attached:
``tdstore sql`` rebuilds it under the store's ``calls`` lock (written to a temporary,
renamed into place) or, on a store it cannot write, answers from the join form (same
columns, slower).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tdstore.atomic import TMP_MARK, fsync_dir, fsync_file, remove_path, temporary_sibling
from tdstore.errors import ConflictError, TdstoreError
from tdstore.schemas import check_metadata
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.taxonomy import RANKS

NAME = "calls"
CACHE_FILE = "cache/calls.duckdb"
META_TABLE = "tdstore_meta"
LOCK = "calls"
# Another process building the same cache: wait for it rather than build twice.
LOCK_WAIT_S = 600.0
CONTIG_COLUMNS = ("row", "contig_id", "sample", "length", "gc", "n_count")
# The deepest taxon's rank and name are RANKS[depth] and the rank column it names: not
# stored again (each text column costs more to build than the rest of a source).
TAXON_FIELDS = ("taxon_id", *RANKS, "depth", "lineage_code")
# Internal table of the views: taxon_id -> depth, lineage_code (see lineage_codes).
CODES_TABLE = "taxon_codes"
MAX_CODE_BITS = 63
# kind -> (view, the view's name column, extra fields after the lineage ones)
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "label": ("labels", "label_set", ("novel",)),
    "soft": ("soft_labels", "soft_label_set", ("confidence", *(f"p_{r}" for r in RANKS))),
    "pred": ("predictions", "run", tuple(f"score_{r}" for r in RANKS)),
}
# Per-rank fields come from the view's list column, one item per rank (domain first).
_LISTS = {"p_": "lineage_probs", "score_": "lineage_scores"}


@dataclass(frozen=True)
class Source:
    """One per-contig table that ``calls`` carries: a label set, soft-label set or run."""

    kind: str  # label, soft, pred
    name: str
    path: Path
    key: str = ""  # the name as it appears in column names (see sources)

    @property
    def prefix(self) -> str:
        return f"{self.kind}_{self.key or self.name}_"

    @property
    def fields(self) -> tuple[str, ...]:
        return (*TAXON_FIELDS, *KINDS[self.kind][2])

    @property
    def columns(self) -> list[str]:
        return [self.prefix + f for f in self.fields]


def cache_path(store: Store) -> Path:
    return store.path / CACHE_FILE


def sources(store: Store) -> list[Source]:
    """Every label set, soft-label set and run with predictions, in the order of the columns."""
    found = [
        Source("label", n, store.object_dir("labels") / f"{n}.parquet")
        for n in store.list_objects("labels", ".parquet")
    ]
    found += [
        Source("soft", n, store.object_dir("soft_labels") / f"{n}.parquet")
        for n in store.list_objects("soft_labels", ".parquet")
    ]
    runs = store.object_dir("runs")
    if runs.is_dir():
        found += [
            Source("pred", p.name, p / "predictions.parquet")
            for p in sorted(runs.iterdir())
            if p.is_dir()
            and TMP_MARK not in p.name
            and not p.name.startswith(".")
            and (p / "predictions.parquet").exists()
        ]
    return _with_keys(found)


def column_key(name: str) -> str:
    """A name as it appears in ``calls`` column names: '-' and '.' become '_' (kd-a03 -> kd_a03)."""
    return re.sub(r"[-.]", "_", name)


def _with_keys(found: list[Source]) -> list[Source]:
    """Every source's columns under its :func:`column_key`, so they never change when other
    sources come or go.

    Imports refuse a name whose key another object of its kind has (:func:`refuse_key_clash`);
    a store that holds such a pair anyway (copied in by hand, or from before that check) keeps
    the key for the name spelt that way (else the first name in sort order), and the others
    keep their own spelling, which holds a '-' or '.' and so is nobody's key.
    """
    owner: dict[tuple[str, str], str] = {}
    for s in sorted(found, key=lambda s: (column_key(s.name) != s.name, s.name)):
        owner.setdefault((s.kind, column_key(s.name)), s.name)
    keyed = []
    for s in found:
        key = column_key(s.name)
        keyed.append(
            Source(s.kind, s.name, s.path, key if owner[s.kind, key] == s.name else s.name)
        )
    return keyed


# What each kind of source is called in messages.
_KIND_NAMES = {"label": "label set", "soft": "soft-label set", "pred": "run"}


def existing_names(store: Store, kind: str) -> list[str]:
    """Names of the store's objects whose columns ``calls`` carries (or will) under ``kind``."""
    if kind == "label":
        return store.list_objects("labels", ".parquet")
    if kind == "soft":
        return store.list_objects("soft_labels", ".parquet")
    if kind == "pred":  # every run directory: a run's predictions may come later
        runs = store.object_dir("runs")
        if not runs.is_dir():
            return []
        return sorted(
            p.name
            for p in runs.iterdir()
            if p.is_dir() and TMP_MARK not in p.name and not p.name.startswith(".")
        )
    raise ValueError(kind)


def refuse_key_clash(store: Store, kind: str, name: str) -> None:
    """Refuse a new ``name`` whose ``calls`` columns would be named like another object's.

    ``a.b-c`` and ``a_b.c`` would both be ``label_a_b_c_*``; the second is refused (one
    ConflictError naming both) so that queries and saved subsets keep meaning what they did.
    Re-using the same name (an overwrite) is not a clash.
    """
    key = column_key(name)
    for other in existing_names(store, kind):
        if other != name and column_key(other) == key:
            what = _KIND_NAMES[kind]
            raise ConflictError(
                f"{what} {name!r}: its calls columns ({kind}_{key}_...) would be those of "
                f"{what} {other!r} ('-' and '.' read as '_'); choose another name"
            )


def column_names(found: list[Source]) -> list[str]:
    return [*CONTIG_COLUMNS, *(c for s in found for c in s.columns)]


def ident(name: str) -> str:
    """A quoted SQL identifier (set names may hold '-' and '.')."""
    return '"' + name.replace('"', '""') + '"'


def lineage_codes(taxonomy: Any) -> tuple[Any, Any, list[int]]:
    """Every taxon's lineage packed into one integer, so two lineages compare in one XOR.

    Rank r (domain first) gets a bit field holding 1 + the ancestor's index among its
    parent's children (0 = no ancestor at that rank); fields are laid out from the high
    bits down, so two codes agree from domain down to rank r exactly when their XOR is
    below ``1 << low[r]``. Returns (codes, depth, low); codes are -1 (unknown) if the
    tree needs more than 63 bits (then :func:`agreement_sql` compares names instead).
    """
    import numpy as np

    n = len(taxonomy)
    matrix = taxonomy.rank_matrix(np.arange(n, dtype=np.int64))  # (n, 7), -1 below depth
    index = np.zeros(n, dtype=np.int64)
    seen: dict[int, int] = {}
    parents = taxonomy.parents
    for taxon in range(1, n):  # children numbered 1, 2, ... in id order under each parent
        seen[parents[taxon]] = seen.get(parents[taxon], 0) + 1
        index[taxon] = seen[parents[taxon]]
    widths = []
    for k in range(len(RANKS)):
        at_rank = matrix[:, k][matrix[:, k] >= 0]
        top = int(index[at_rank].max()) if at_rank.size else 0
        widths.append(max(1, top.bit_length()))
    depth = np.asarray([RANKS.index(r) + 1 if r in RANKS else 0 for r in taxonomy.ranks])
    low, position = [], sum(widths)
    for width in widths:
        position -= width
        low.append(position)
    if sum(widths) > MAX_CODE_BITS:
        return np.full(n, -1, dtype=np.int64), depth.astype(np.int64), low
    codes = np.zeros(n, dtype=np.int64)
    for k in range(len(RANKS)):
        ancestor = matrix[:, k]
        field = np.where(ancestor >= 0, index[np.maximum(ancestor, 0)], 0)
        codes |= field.astype(np.int64) << np.int64(low[k])
    return codes, depth.astype(np.int64), low


def agreement_sql(low: list[int], *, packed: bool) -> str:
    """The body of the ``rank_agreement(a, b)`` table macro (a, b: column prefixes)."""
    from tdstore.sql import quote

    def col(which: int, field: str) -> str:  # "{0}_depth": a placeholder for format()
        return '"{' + str(which) + "}_" + field + '"'

    if packed:
        # Lineages agree from domain down to rank r exactly when the XOR of their codes is
        # below 1 << low[r]: one integer per contig, tested deepest rank first (the common
        # case leaves after one comparison). The CASE's constant results give the grouping
        # keys known bounds, so DuckDB groups with a perfect hash, as it does the depths.
        x = f"xor({col(0, 'lineage_code')}, {col(1, 'lineage_code')})"
        steps = " ".join(f"WHEN x < {1 << low[r - 1]} THEN {r}" for r in range(6, 0, -1))
        agreed = f"CASE WHEN x = 0 THEN 7 {steps} ELSE 0 END"
        source = f"(SELECT *, {x} AS x FROM calls)"
    else:
        # Codes would need more than 63 bits: count equal rank names (ranks nest).
        agreed = " + ".join(f"coalesce(({col(0, r)} = {col(1, r)})::INT, 0)" for r in RANKS)
        source = "calls"
    per_row = (
        f"SELECT {col(0, 'depth')} AS da, {col(1, 'depth')} AS db, {agreed} AS agreed, "
        f"count(*) AS n FROM {source} WHERE {col(0, 'depth')} IS NOT NULL "
        f"AND {col(1, 'depth')} IS NOT NULL GROUP BY ALL"
    )
    ranks = ", ".join(f"({quote(r)}, {k + 1})" for k, r in enumerate(RANKS))
    both = "least(da, db) >= r.depth"
    return (
        f"SELECT r.rank, (sum(n) FILTER ({both}))::BIGINT AS both_labelled, "
        f"sum(n) FILTER ({both} AND agreed >= r.depth) / sum(n) FILTER ({both}) AS agreement "
        f"FROM query(format({quote(per_row)}, a, b)), (VALUES {ranks}) r(rank, depth) "
        "GROUP BY r.rank, r.depth ORDER BY r.depth"
    )


def join_sql(found: list[Source]) -> str:
    """``calls`` as a query over the store's views: the definition the cache materialises."""
    from tdstore.sql import INTERNAL, quote

    select = [f"c.{ident(c)}" for c in CONTIG_COLUMNS]
    joins = []
    for i, source in enumerate(found):
        view, name_column, _ = KINDS[source.kind]
        alias, codes = f"s{i}", f"k{i}"
        for field in source.fields:
            prefix = next((p for p in _LISTS if field.startswith(p)), None)
            if field in {"depth", "lineage_code"}:
                value = f"{codes}.{field}"
            elif prefix is None:
                value = f"{alias}.{ident(field)}"
            else:
                depth = RANKS.index(field[len(prefix) :]) + 1
                value = f"{alias}.{_LISTS[prefix]}[{depth}]"
            select.append(f"{value} AS {ident(source.prefix + field)}")
        joins.append(
            f"LEFT JOIN (SELECT * FROM {view} WHERE {name_column} = {quote(source.name)}) "
            f"{alias} ON {alias}.row = c.row LEFT JOIN {INTERNAL}.{CODES_TABLE} {codes} "
            f"ON {codes}.taxon_id = {alias}.taxon_id"
        )
    return f"SELECT {', '.join(select)} FROM contigs c {' '.join(joins)} WHERE c.kept"


# ----- the key -----------------------------------------------------------------------------
def _footer_digest(path: Path) -> str:
    """sha256 of a Parquet file's footer (schema, metadata, row group statistics)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size < 12:
            return "short"
        handle.seek(size - 8)
        tail = handle.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != b"PAR1" or length + 8 > size:
            return "not-parquet"
        handle.seek(size - 8 - length)
        return hashlib.sha256(handle.read(length)).hexdigest()


def _file_key(store: Store, path: Path) -> dict[str, Any]:
    if not path.exists():  # e.g. no taxonomy yet: the key says so
        return {"path": str(path.relative_to(store.path)), "missing": True}
    stat = path.stat()
    return {
        "path": str(path.relative_to(store.path)),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "footer": _footer_digest(path),
    }


def inputs(store: Store, found: list[Source]) -> dict[str, Any]:
    """What the cache is made from; any change gives another fingerprint."""
    import duckdb

    files = [store.core_dir / "contigs.parquet", store.taxonomy_path]
    return {
        "refhash": store.refhash,
        "schema_version": S.CALLS.version,
        "duckdb": duckdb.__version__,
        "columns": column_names(found),  # a change of layout is a change of key
        "files": [_file_key(store, p) for p in [*files, *(s.path for s in found)]],
    }


def fingerprint(store: Store, found: list[Source] | None = None) -> str:
    found = sources(store) if found is None else found
    blob = json.dumps(inputs(store, found), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


# ----- reading the cache ----------------------------------------------------------------------
def read_document(con: Any, database: str) -> dict[str, Any]:
    """The cache's tag document from an attached cache database (SchemaError if not ours)."""
    rows = con.execute(f"SELECT document FROM {database}.{META_TABLE}").fetchall()
    doc = json.loads(rows[0][0]) if len(rows) == 1 else {}
    check_metadata(CACHE_FILE, S.CALLS.name, doc.get("schema"), doc.get("schema_version"))
    return doc


def attach_current(con: Any, store: Store, key: str, database: str) -> bool:
    """Attach the cache read-only as ``database`` if it is intact and made from ``key``.

    Anything else (missing, unreadable, another tool's file, stale) leaves nothing attached.
    """
    import duckdb

    path = cache_path(store)
    if not path.is_file():
        return False
    from tdstore.sql import quote

    try:
        con.execute(f"ATTACH {quote(str(path.resolve()))} AS {database} (READ_ONLY)")
    except duckdb.Error:
        return False
    try:
        doc = read_document(con, database)
        ok = doc.get("fingerprint") == key and doc.get("n_rows") == store.n_contigs
    except (duckdb.Error, TdstoreError, ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        con.execute(f"DETACH {database}")
    return ok


def is_current(store: Store) -> bool:
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        return attach_current(con, store, fingerprint(store), "probe")
    finally:
        con.close()


# ----- building it ----------------------------------------------------------------------------
def refresh(store: Store, *, wait_s: float = LOCK_WAIT_S) -> bool:
    """Make the cache current; False if this store cannot be written (or the build failed).

    Builds under the store's ``calls`` lock into a temporary file renamed into place, so a
    reader sees the old cache, no cache, or the new one, never a part. Inputs that change
    during the build leave the old state in place.
    """
    import duckdb

    if not store.is_ingested:
        return False
    try:
        if is_current(store):
            return True
        with store.lock(LOCK, timeout=wait_s):
            if is_current(store):  # built by the process we waited for
                return True
            return build(store)
    except (OSError, TdstoreError, duckdb.Error):
        # Read-only store, full disk, a lock held too long, a source with unsorted rows:
        # the join form answers instead.
        return False


def build(store: Store, key: str | None = None) -> bool:
    """Write ``cache/calls.duckdb``, typed by the join form, rows streamed from the sources.

    Call under the ``calls`` lock. False (nothing published) if the inputs changed meanwhile.
    """
    import duckdb

    from tdstore import sql as tsql

    found = sources(store)
    key = fingerprint(store, found) if key is None else key
    target = cache_path(store)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    spill = temporary_sibling(target.with_name("spill"))
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        tsql.build_views(store, con)
        con.execute(f"SET memory_limit = '{_memory_limit_mb()}MB'")
        con.execute(f"SET temp_directory = {tsql.quote(str(spill))}")
        con.execute(f"ATTACH {tsql.quote(str(tmp))} AS out")
        # The join form fixes the column types; the rows are streamed in row order.
        con.execute(f"CREATE TABLE out.{NAME} AS SELECT * FROM ({join_sql(found)}) LIMIT 0")
        _fill(store, found, con, f"out.{NAME}")
        n_rows = con.execute(f"SELECT count(*) FROM out.{NAME}").fetchone()[0]
        doc = S.CALLS.stamp(
            {
                "fingerprint": key,
                "inputs": inputs(store, found),
                "n_rows": n_rows,
                "columns": column_names(found),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        con.execute(f"CREATE TABLE out.{META_TABLE} (document VARCHAR)")
        con.execute(f"INSERT INTO out.{META_TABLE} VALUES (?)", [json.dumps(doc)])
        con.execute("DETACH out")  # checkpoints: everything is in the file, no WAL left
        con.close()
        if fingerprint(store, sources(store)) != key or n_rows != store.n_contigs:
            return False  # inputs changed while we read them: leave the old state
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return True
    finally:
        con.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal"), spill):
            remove_path(leftover)


# ----- streaming the sources in row order ---------------------------------------------------------
BLOCK_ROWS = 1 << 18


class _RowStream:
    """A Parquet table sorted by ``row``, handed out as dense blocks of rows [lo, hi).

    Rows a block lacks come back as missing (``present`` false). A file whose rows are
    not strictly increasing raises SchemaError: the cache is then not built.
    """

    def __init__(self, path: Path, columns: list[str]):
        import pyarrow.parquet as pq

        self.path = path
        self._batches = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(
            batch_size=BLOCK_ROWS, columns=["row", *columns]
        )
        self._pending: list[Any] = []
        self._last = -1
        self._done = False

    def _pull(self, hi: int) -> None:
        import numpy as np

        from tdstore.errors import SchemaError

        while not self._done and self._last < hi - 1:
            batch = next(self._batches, None)
            if batch is None:
                self._done = True
                break
            rows = batch.column(0)
            if rows.null_count:  # filtered contigs in contigs.parquet
                import pyarrow.compute as pc

                batch = batch.filter(pc.is_valid(rows))
                rows = batch.column(0)
            values = rows.to_numpy()
            if values.size and (values[0] <= self._last or np.any(np.diff(values) <= 0)):
                raise SchemaError(f"{self.path}: rows are not strictly increasing")
            if values.size:
                self._last = int(values[-1])
                self._pending.append(batch)

    def take(self, lo: int, hi: int) -> tuple[Any, Any]:
        """(positions in [0, hi - lo), the record batch of those rows)."""
        import numpy as np
        import pyarrow as pa

        self._pull(hi)
        if not self._pending:
            return np.zeros(0, dtype=np.int64), None
        table = pa.Table.from_batches(self._pending).combine_chunks()
        rows = table.column(0).to_numpy()
        cut = int(np.searchsorted(rows, hi))
        self._pending = table.slice(cut).to_batches() if cut < len(rows) else []
        part = table.slice(0, cut)
        return rows[:cut] - lo, part


class _Dense:
    """Builds one block's columns from the sparse rows of a source."""

    def __init__(self, store: Store):
        import numpy as np
        import pyarrow as pa

        taxonomy = store.taxonomy()
        n = len(taxonomy)
        self.ancestors = taxonomy.rank_matrix(np.arange(n, dtype=np.int64))
        self.codes, self.depth, _ = lineage_codes(taxonomy)
        self.names = pa.array(taxonomy.names, pa.string())

    def taxon_columns(self, size: int, positions: Any, taxa: Any) -> list[Any]:
        import numpy as np
        import pyarrow as pa

        present = np.zeros(size, dtype=bool)
        present[positions] = True
        taxon = np.zeros(size, dtype=np.int64)
        taxon[positions] = taxa
        missing = ~present

        def lookup(indices: Any, dictionary: Any, absent: Any) -> Any:
            idx = pa.array(indices.astype(np.int32), mask=absent)
            return pa.DictionaryArray.from_arrays(idx, dictionary)

        columns = [pa.array(taxon, mask=missing)]
        matrix = self.ancestors[taxon]
        for k in range(len(RANKS)):
            ids = matrix[:, k]
            columns.append(lookup(np.maximum(ids, 0), self.names, missing | (ids < 0)))
        columns.append(pa.array(self.depth[taxon].astype(np.int8), mask=missing))
        codes = self.codes[taxon]
        columns.append(pa.array(codes, mask=missing | (codes < 0)))
        return columns

    @staticmethod
    def plain(size: int, positions: Any, column: Any) -> Any:
        """A scalar column of the source, placed at its rows (null elsewhere)."""
        import numpy as np
        import pyarrow as pa

        index = np.full(size, -1, dtype=np.int64)
        index[positions] = np.arange(len(positions))
        return column.take(pa.array(index, mask=index < 0))

    @staticmethod
    def by_rank(size: int, positions: Any, lists: Any) -> list[Any]:
        """Item k of a list column (domain first) as rank k's column."""
        import numpy as np
        import pyarrow as pa

        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        lengths = lists.value_lengths().fill_null(0).to_numpy().astype(np.int64)
        values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        owner = np.repeat(positions, lengths)
        depth = np.arange(values.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        keep = depth < len(RANKS)
        out = np.zeros((size, len(RANKS)), dtype=np.float32)
        valid = np.zeros((size, len(RANKS)), dtype=bool)
        out[owner[keep], depth[keep]] = values[keep]
        valid[owner[keep], depth[keep]] = True
        return [pa.array(out[:, k], mask=~valid[:, k]) for k in range(len(RANKS))]


_RAW = {
    "label": {"taxon_id": "int64", "novel": "bool"},
    "soft": {"taxon_id": "int64", "confidence": "float32", "lineage_probs": "list<float32>"},
    "pred": {"taxon_id": "int64", "lineage_scores": "list<float32>"},
}


def _empty_part(kind: str) -> Any:
    import pyarrow as pa

    types = {"int64": pa.int64(), "bool": pa.bool_(), "float32": pa.float32()}
    types["list<float32>"] = pa.list_(pa.float32())
    return pa.table({c: pa.array([], types[t]) for c, t in _RAW[kind].items()})


def _fill(store: Store, found: list[Source], con: Any, table: str) -> None:
    """Insert every row of ``calls`` block by block, without joins (sources are row-sorted)."""
    import pyarrow as pa

    n = store.n_contigs
    dense = _Dense(store)
    contigs = _RowStream(store.core_dir / "contigs.parquet", list(CONTIG_COLUMNS[1:]))
    streams = [_RowStream(s.path, list(_RAW[s.kind])) for s in found]
    names = column_names(found)
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        size = hi - lo
        positions, part = contigs.take(lo, hi)
        if part is None or len(positions) != size:
            raise ConflictError(f"{store.core_dir / 'contigs.parquet'}: rows are not dense")
        columns = list(part.columns)
        for source, stream in zip(found, streams, strict=True):
            positions, part = stream.take(lo, hi)
            if part is None:
                part = _empty_part(source.kind)
            columns += dense.taxon_columns(size, positions, part.column("taxon_id").to_numpy())
            if source.kind == "label":
                columns.append(dense.plain(size, positions, part.column("novel")))
            elif source.kind == "soft":
                columns.append(dense.plain(size, positions, part.column("confidence")))
                columns += dense.by_rank(size, positions, part.column("lineage_probs"))
            else:
                columns += dense.by_rank(size, positions, part.column("lineage_scores"))
        block = pa.table(columns, names=names)
        con.register("tdstore_block", block)
        try:
            con.execute(f"INSERT INTO {table} SELECT * FROM tdstore_block")
        finally:
            con.unregister("tdstore_block")


def _memory_limit_mb() -> int:
    """A quarter of the machine's memory, at most 4 GiB (other work shares the box)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(max(512, min(4096, total // 4 >> 20)))


# ----- the named-object protocol (info, check) -------------------------------------------------
def list_names(store: Store) -> list[str]:
    return [NAME] if cache_path(store).exists() else []


def describe(store: Store, name: str) -> dict[str, Any]:
    doc = _document(store)
    current = doc is not None and doc.get("fingerprint") == fingerprint(store)
    return {
        "rows": None if doc is None else doc.get("n_rows"),
        "columns": None if doc is None else len(doc.get("columns", [])),
        "current": current,
        "size_mb": round(cache_path(store).stat().st_size / 1e6, 1),
    }


def check(store: Store, name: str, deep: bool) -> list[str]:
    """A damaged cache is a problem to report (it is never used); a stale one is not."""
    where = CACHE_FILE
    try:
        doc = _document(store, strict=True)
    except TdstoreError as exc:
        return [f"{exc}; it is never used: delete it, `tdstore sql` rebuilds it"]
    if doc is None or doc.get("fingerprint") != fingerprint(store) or not deep:
        return []
    return _deep_check(store, where)


def _document(store: Store, *, strict: bool = False) -> dict[str, Any] | None:
    import duckdb

    from tdstore.errors import SchemaError
    from tdstore.sql import quote

    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {quote(str(cache_path(store).resolve()))} AS c (READ_ONLY)")
        return read_document(con, "c")
    except (duckdb.Error, ValueError, TypeError, AttributeError) as exc:
        if strict:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchemaError(f"{CACHE_FILE}: unreadable ({message})") from None
        return None
    except TdstoreError:
        if strict:
            raise
        return None
    finally:
        con.close()


def _deep_check(store: Store, where: str) -> list[str]:
    """Every value of the cache against the join form it stands for."""
    import duckdb

    from tdstore import sql as tsql

    found = sources(store)
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        tsql.build_views(store, con)
        con.execute(f"ATTACH {tsql.quote(str(cache_path(store).resolve()))} AS c (READ_ONLY)")
        columns = ", ".join(ident(c) for c in column_names(found))
        differ = con.execute(
            f"SELECT count(*) FROM ((SELECT {columns} FROM c.{NAME} EXCEPT ALL "
            f"SELECT {columns} FROM ({join_sql(found)})) UNION ALL "
            f"(SELECT {columns} FROM ({join_sql(found)}) EXCEPT ALL "
            f"SELECT {columns} FROM c.{NAME}))"
        ).fetchone()[0]
    except duckdb.Error as exc:
        return [f"{where}: unreadable ({str(exc).strip().splitlines()[0]})"]
    finally:
        con.close()
    return [f"{where}: {differ} rows differ from the tables it caches"] if differ else []


_REFERENCE = re.compile(rf"\b{NAME}\b", re.IGNORECASE)


def referenced(sql: str) -> bool:
    """Whether a query may read the ``calls`` view (then it is worth building the cache).

    A word match, not a parse: DuckDB's table-name helper binds the statement, which must
    never happen before the read-only check. A false match only builds the cache early.
    """
    return bool(_REFERENCE.search(sql))
