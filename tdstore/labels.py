"""Label sets: import a label file into a store, and read label sets back.

A label set gives each contig of the file that the store keeps its deepest taxon (0 =
unclassified) in the store's one taxonomy tree; contigs absent from the file have no row::

    summary = import_labels(store, "mmseqs", "lca.tsv", format="mmseqs2")
    lineage_table(store, "mmseqs").to_pandas().head()
"""

from __future__ import annotations

import array
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tdstore.calls import refuse_key_clash
from tdstore.errors import BadInputError, ConflictError, TdstoreError
from tdstore.ingest.files import require_regular_file
from tdstore.ingest.label_columns import LabelColumns, read_label_columns
from tdstore.ingest.labels import check_format, read_labels
from tdstore.progress import Progress
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import write_table
from tdstore.taxonomy import RANKS, ROOT_ID, Taxonomy, format_lineage

LOCK_TIMEOUT_S = 30.0
N_EXAMPLES = 5
# Formats whose names come from NCBI-style taxonomies, where a name may have two parents.
NCBI_NAMED_FORMATS = ("mmseqs2", "cami", "kraken2", "metabuli")
DEFAULT_TOOL = {
    "taxometer": "taxometer-tsv",
    "mmseqs2": "mmseqs2",
    "cami": "cami-gold-standard",
    "kraken2": "kraken2",
    "metabuli": "metabuli",
    "taxometer-output": "taxometer",
}


def _md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


class _Collected:
    """Rows of one label file, with each distinct lineage stored once."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, ...], int] = {(): 0}
        self.lineages: list[tuple[str, ...]] = [()]
        self.first_where: list[str] = [""]
        self.rows = array.array("q")
        self.lineage_of_row = array.array("q")
        self.novel: list[bool | None] = []
        self.n_rows = self.unknown = self.filtered = 0
        self.unknown_examples: list[str] = []
        self.filtered_examples: list[str] = []

    def lineage_key(self, lineage: tuple[str, ...], where: str) -> int:
        key = self.index.get(lineage)
        if key is None:
            key = self.index[lineage] = len(self.lineages)
            self.lineages.append(lineage)
            self.first_where.append(where)
        return key


def _collect(
    store: Store, path: Path, format: str, taxdump: Path | None, min_score: float | None
) -> _Collected:
    contigs = store.contigs(kept_only=False, columns=["contig_id", "kept"])
    dropped = contigs.filter(pc.invert(contigs.column("kept")))
    total = path.stat().st_size if path.suffix != ".gz" else None
    with Progress(f"labels {path.name}", total=total, unit="B") as bar:
        # Arrow reads the big formats column-wise; a file it cannot vouch for (or one that
        # holds an error, which the line parser then names) goes through the line parser.
        columns = read_label_columns(path, format, taxdump=taxdump)
        if columns is not None:
            bar.advance(total or 0)
            return _collect_columns(path, contigs, dropped, columns)
        filtered_ids = set(dropped.column("contig_id").to_pylist())
        row_of = store.row_of
        out = _Collected()
        records = read_labels(
            path, format, taxdump=taxdump, min_score=min_score, on_bytes=bar.advance
        )
        for record in records:
            out.n_rows += 1
            key = out.lineage_key(record.lineage, f"{path}:{record.line}")
            row = row_of.get(record.contig_id)
            if row is None:
                if record.contig_id in filtered_ids:
                    out.filtered += 1
                    if len(out.filtered_examples) < N_EXAMPLES:
                        out.filtered_examples.append(record.contig_id)
                else:
                    out.unknown += 1
                    if len(out.unknown_examples) < N_EXAMPLES:
                        out.unknown_examples.append(record.contig_id)
                continue
            out.rows.append(row)
            out.lineage_of_row.append(key)
            out.novel.append(record.novel)
    return out


def _collect_columns(
    path: Path, contigs: pa.Table, dropped: pa.Table, columns: LabelColumns
) -> _Collected:
    """:func:`_collect`'s result from columns: the same fields, computed without a row loop."""
    kept_ids = contigs.filter(contigs.column("kept")).column("contig_id").combine_chunks()
    ids = columns.contig_ids
    row = pc.fill_null(pc.index_in(ids, value_set=kept_ids), -1).to_numpy().astype(np.int64)
    matched = row >= 0
    filtered = pc.is_in(ids, value_set=dropped.column("contig_id").combine_chunks())
    filtered = filtered.to_numpy(zero_copy_only=False) & ~matched
    unknown = ~matched & ~filtered
    out = _Collected()
    out.n_rows = columns.n_rows
    out.lineages = columns.lineages
    out.index = {lineage: key for key, lineage in enumerate(columns.lineages)}
    out.first_where = ["", *(f"{path}:{line}" for line in columns.first_line[1:])]
    out.rows.frombytes(row[matched].tobytes())
    out.lineage_of_row.frombytes(columns.lineage_keys[matched].astype(np.int64).tobytes())
    n_matched = int(matched.sum())
    if columns.novel is None:
        out.novel = [None] * n_matched
    else:
        out.novel = columns.novel.filter(pa.array(matched)).to_pylist()
    out.filtered, out.unknown = int(filtered.sum()), int(unknown.sum())
    for mask, examples in ((filtered, out.filtered_examples), (unknown, out.unknown_examples)):
        first = np.flatnonzero(mask)[:N_EXAMPLES]
        examples.extend(ids.take(pa.array(first)).to_pylist())
    return out


def _add_lineages(
    taxonomy: Taxonomy,
    collected: _Collected,
    keys: np.ndarray,
    homonyms: list[tuple[str, str, str]] | None,
) -> np.ndarray:
    """Taxon id of each distinct lineage in ``keys`` (others -1), added in file order.

    ``homonyms``: collect NCBI homonyms (:meth:`Taxonomy.add_lineage`) instead of refusing.
    """
    taxon_of_key = np.full(len(collected.lineages), -1, dtype=np.int64)
    for key in keys.tolist():
        taxon_of_key[key] = taxonomy.add_lineage(
            collected.lineages[key], where=collected.first_where[key], homonyms=homonyms
        )
    return taxon_of_key


def _counts(collected: _Collected, depth: np.ndarray, novel: list[bool | None]) -> dict[str, Any]:
    return {
        "rows": collected.n_rows,
        "matched": int(depth.shape[0]),
        "unknown": collected.unknown,
        "filtered": collected.filtered,
        "unclassified": int((depth == 0).sum()),
        # Contigs labelled at least down to each rank (a genus label counts for genus and above).
        "classified_at": {rank: int((depth > i).sum()) for i, rank in enumerate(RANKS)},
        "novel": sum(1 for v in novel if v) if any(v is not None for v in novel) else None,
    }


def import_labels(
    store: Store,
    name: str,
    path: Path | str,
    *,
    format: str,
    taxdump: Path | str | None = None,
    overwrite: bool = False,
    tool: str | None = None,
    min_score: float | None = None,
) -> dict[str, Any]:
    """Import a label file as label set ``name``; returns the summary stored with it.

    ``min_score`` (Taxometer output only) cuts each lineage before its first node scored
    at or below it.

    Contigs of the file that the store does not hold are counted (``unknown``) or, if
    below the length filter, ``filtered``; if none matches, the file is refused. The
    store is untouched unless the whole file is valid.
    """
    path = Path(path).absolute()
    taxdump = None if taxdump is None else Path(taxdump).absolute()
    check_format(format, taxdump, min_score)  # usage errors first (exit 2)
    target = store.label_path(name)
    if target.exists() and not overwrite:
        raise ConflictError(f"{target}: label set {name!r} exists; use --overwrite to replace it")
    refuse_key_clash(store, "label", name)
    require_regular_file(path)  # read twice (rows, then md5): a pipe would be used up
    store.core  # noqa: B018 - a clear error if the store has no contigs yet
    collected = _collect(store, path, format, taxdump, min_score)
    if collected.n_rows and not collected.rows:
        examples = ", ".join(collected.unknown_examples or collected.filtered_examples)
        why = (
            f"all {collected.filtered} listed contigs are below the store's length filter"
            if collected.filtered == collected.n_rows
            else f"{collected.unknown} unknown, {collected.filtered} below the length filter"
        )
        raise BadInputError(
            f"{path}: none of its {collected.n_rows} contigs is in the store ({why}; "
            f"e.g. {examples}; store has e.g. {', '.join(store.contig_ids()[:3].tolist())}): "
            "probably the wrong file"
        )
    order = np.argsort(np.frombuffer(collected.rows, dtype=np.int64), kind="stable")
    rows = np.frombuffer(collected.rows, dtype=np.int64)[order]
    keys = np.frombuffer(collected.lineage_of_row, dtype=np.int64)[order]
    if any(v is not None for v in collected.novel):
        novel = [collected.novel[i] for i in order.tolist()]
    else:
        novel = [None] * len(collected.novel)
    used = np.unique(keys)  # keys number lineages in order of first appearance: file order
    # NCBI names are not unique (homonyms across kingdoms); GTDB's are, so there a name
    # under two parents means inconsistent input.
    ncbi = format in NCBI_NAMED_FORMATS
    # Validate every lineage of the file (not only matched ones) before touching the store.
    _add_lineages(
        store.taxonomy(), collected, np.arange(len(collected.lineages)), [] if ncbi else None
    )
    depth = np.asarray([len(lineage) for lineage in collected.lineages], dtype=np.int64)[keys]
    counts = _counts(collected, depth, novel)
    examples = {
        "unknown": collected.unknown_examples,
        "filtered": collected.filtered_examples,
    }
    with store.lock("taxonomy", timeout=LOCK_TIMEOUT_S):
        if target.exists() and not overwrite:
            raise ConflictError(f"{target}: label set {name!r} exists; use --overwrite")
        refuse_key_clash(store, "label", name)  # again: another import may have finished
        taxonomy = store.taxonomy().copy()
        n_before = len(taxonomy)
        homonyms: list[tuple[str, str, str]] = []
        taxon_of_key = _add_lineages(taxonomy, collected, used, homonyms if ncbi else None)
        if len(taxonomy) > n_before:
            store.write_taxonomy(taxonomy)
        counts["taxa_added"] = len(taxonomy) - n_before
        counts["homonyms"] = len(homonyms)
        examples["homonyms"] = [f"{new} ({where})" for _, new, where in homonyms[:N_EXAMPLES]]
        table = pa.table(
            {
                "row": pa.array(rows, pa.int64()),
                "contig_id": pa.array(store.contig_ids()[rows].tolist(), pa.string()),
                "taxon_id": pa.array(taxon_of_key[keys], pa.int64()),
                "novel": pa.array(novel, pa.bool_()),
            }
        )
        metadata = {
            "name": name,
            "format": format,
            "tool": tool or DEFAULT_TOOL[format],
            "source": str(path),
            "source_md5": _md5(path),
            "taxdump": None if taxdump is None else str(taxdump),
            "min_score": min_score,
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": counts,
            "examples": examples,
        }
        write_table(target, S.LABELS, table, metadata=metadata, refhash=store.refhash)
    return {
        "name": name,
        "format": format,
        "source": str(path),
        **counts,
        "unknown_examples": examples["unknown"],
        "filtered_examples": examples["filtered"],
        "homonym_examples": examples["homonyms"],
    }


# ----- reading label sets ------------------------------------------------------------
def read_label_set(store: Store, name: str) -> tuple[pa.Table, dict[str, Any]]:
    """The label table (row, contig_id, taxon_id, novel) and its provenance; refhash checked."""
    return store.labels(name)


def label_vector(store: Store, name: str) -> np.ndarray:
    """(N,) int64 taxon id per kept contig: 0 unclassified, -1 where the file had no row."""
    table, _ = store.labels(name)
    out = np.full(store.n_contigs, -1, dtype=np.int64)
    out[table.column("row").to_numpy()] = table.column("taxon_id").to_numpy()
    return out


def lineage_table(store: Store, name: str) -> pa.Table:
    """Per labelled contig: row, contig_id, taxon_id, novel, then one name column per rank."""
    table, _ = store.labels(name)
    taxonomy = store.taxonomy()
    matrix = taxonomy.rank_matrix(table.column("taxon_id").to_numpy())
    names = np.asarray(taxonomy.names, dtype=object)
    columns: dict[str, pa.Array] = {c: table.column(c) for c in table.column_names}
    for i, rank in enumerate(RANKS):
        ids = matrix[:, i]
        columns[rank] = pa.array(np.where(ids >= 0, names[ids], None).tolist(), pa.string())
    return pa.table(columns)


def lineage_text(taxonomy: Taxonomy, taxon_id: int) -> str:
    return format_lineage(taxonomy.lineage_names(taxon_id)) if taxon_id != ROOT_ID else ""


# ----- the named-object protocol (info, check) -----------------------------------------
def list_names(store: Store) -> list[str]:
    return store.label_sets()


def describe(store: Store, name: str) -> dict[str, Any]:
    _, meta = store.labels(name)
    return {
        "format": meta.get("format"),
        "tool": meta.get("tool"),
        "source": meta.get("source"),
        "imported_at": meta.get("imported_at"),
        "counts": meta.get("counts", {}),
    }


def check(store: Store, name: str, deep: bool = False) -> list[str]:
    where = f"labels/{name}.parquet"
    try:
        table, _ = store.labels(name)
    except TdstoreError as exc:
        return [str(exc)]
    problems = []
    rows = table.column("row").to_numpy()
    taxa = table.column("taxon_id").to_numpy()
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= store.n_contigs):
        problems.append(f"{where}: rows not strictly increasing within 0..{store.n_contigs - 1}")
    if taxa.size and (taxa.min() < 0 or taxa.max() >= len(store.taxonomy())):
        problems.append(f"{where}: taxon ids outside the store's taxonomy")
    if deep and not problems:
        ids = store.contig_ids()[rows]
        if ids.tolist() != table.column("contig_id").to_pylist():
            problems.append(f"{where}: contig ids do not match the store's rows")
    return problems
