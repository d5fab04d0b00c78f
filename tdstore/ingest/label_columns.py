"""Columnar reading of the large label formats (Taxometer TSV, MMseqs2, Kraken2) with Arrow.

Label files of real assemblies hold millions of rows but only thousands of distinct
lineages. The line parsers (:mod:`tdstore.ingest.labels`, :mod:`tdstore.ingest.taxid_labels`)
spend microseconds of Python on every row; here Arrow splits the file in C++, each distinct
lineage text (or taxid) is parsed once, and the rest is vectorised.

This reader only vouches for files it fully understands. Anything else (a row with another
number of columns, a blank line, an empty id, a bad taxid or novel flag, a contig listed
twice, a lineage that does not parse) makes :func:`read_label_columns` return None, and the
caller runs the line parser, whose error names the file and line. So the two readers agree
on every file this one accepts, and errors stay exactly as they were (tests compare both).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tdstore.errors import TdstoreError
from tdstore.ingest.files import require_regular_file
from tdstore.ingest.label_lines import LineageCache, not_taxids

FAST_FORMATS = ("taxometer", "mmseqs2", "kraken2")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_KRAKEN2_TAXID = r"^(?:\d+|.*\(taxid \d+\))$"  # as Kraken2 writes it, --use-names or not


@dataclass
class LabelColumns:
    """Every row of a label file, in file order, with each distinct lineage once.

    ``lineages[0]`` is the empty lineage; the others are numbered in order of first
    appearance, as the line parser numbers them. ``first_line[k]`` is the 1-based line
    of lineage ``k``'s first row.
    """

    contig_ids: pa.Array
    lineage_keys: np.ndarray
    lineages: list[tuple[str, ...]]
    first_line: list[int]
    novel: pa.Array | None
    n_rows: int


def read_label_columns(
    path: Path, format: str, *, taxdump: Path | None = None
) -> LabelColumns | None:
    """The file's rows, or None when the line parser must read it (see the module doc)."""
    if format not in FAST_FORMATS:
        return None
    require_regular_file(path)
    first = _first_line(path)
    if first is None:
        return None
    header = tuple(f.strip() for f in first.split("\t"))
    skip = 0
    if format == "taxometer":
        if header not in (("contigs", "predictions"), ("contigs", "predictions", "novel")):
            return None
        skip, width = 1, len(header)
    else:
        width = len(first.split("\t"))
        if (format == "mmseqs2" and width not in (5, 9)) or (format == "kraken2" and width != 5):
            return None
    table = _read_table(path, width, skip)
    if table is None or table.num_rows == 0:
        return None
    try:
        return _columns(table, format, skip, taxdump)
    except (TdstoreError, KeyError, pa.ArrowInvalid):
        return None  # the line parser names the line


def _first_line(path: Path) -> str | None:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.readline()
        text = raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    return text if text.strip() else None


def _read_table(path: Path, width: int, skip: int) -> pa.Table | None:
    import pyarrow.csv as pcsv

    names = [f"f{i}" for i in range(width)]
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            return pcsv.read_csv(
                stream,
                read_options=pcsv.ReadOptions(
                    column_names=names, skip_rows=skip, block_size=16 << 20
                ),
                parse_options=pcsv.ParseOptions(
                    delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    null_values=[],
                ),
            )
    except (pa.ArrowInvalid, OSError):
        return None  # another column count somewhere, bad UTF-8, a damaged gzip


def _columns(table: pa.Table, format: str, skip: int, taxdump: Path | None) -> LabelColumns | None:
    import pyarrow.compute as pc

    def column(i: int) -> pa.Array:
        return pc.utf8_trim_whitespace(table.column(f"f{i}").combine_chunks())

    ids = column(1 if format == "kraken2" else 0)
    # A blank line reads as a row of empty fields (the line parser skips those).
    if pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py():
        return None
    if pc.count_distinct(ids).as_py() != len(ids):
        return None  # a contig listed twice: the line parser names both lines
    novel = None
    if format == "taxometer":
        texts = column(1)
        if table.num_columns == 3:
            novel = _novel(column(2))
            if novel is None:
                return None
        lineage_of_text = _parse_texts(texts, LineageCache())
    elif format == "mmseqs2":
        taxids = _taxids(column(1))
        if taxids is None:
            return None
        texts = column(table.num_columns - 1)
        texts = pc.if_else(pc.equal(taxids, 0), "", texts)  # unclassified: no lineage
        lineage_of_text = _parse_texts(texts, LineageCache(check=not_taxids, fill_gaps=True))
    else:
        status = column(0)
        if not pc.all(pc.is_in(status, value_set=pa.array(["C", "U"]))).as_py():
            return None
        raw = column(2)
        if not pc.all(pc.match_substring_regex(raw, _KRAKEN2_TAXID)).as_py():
            return None
        digits = pc.extract_regex(raw, r"(?P<taxid>\d+)\)?$").field("taxid")
        taxids = pc.if_else(pc.equal(status, "U"), 0, pc.cast(digits, pa.int64()))
        texts, lineage_of_text = _resolve_taxids(taxids, taxdump)
    keys, lineages, first_rows = _number_lineages(texts, lineage_of_text)
    return LabelColumns(
        contig_ids=ids,
        lineage_keys=keys,
        lineages=lineages,
        first_line=(first_rows + skip + 1).tolist(),
        novel=novel,
        n_rows=len(ids),
    )


def _novel(values: pa.Array) -> pa.Array | None:
    """Taxometer gold's ``novel`` column as booleans (empty = null); None if a value is bad."""
    import pyarrow.compute as pc

    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    true = pc.is_in(lowered, value_set=pa.array(_TRUE))
    false = pc.is_in(lowered, value_set=pa.array(_FALSE))
    empty = pc.equal(lowered, "")
    if not pc.all(pc.or_(pc.or_(true, false), empty)).as_py():
        return None
    return pc.if_else(empty, pa.scalar(None, pa.bool_()), true)


def _taxids(values: pa.Array) -> pa.Array | None:
    """MMseqs2's taxid column as int64; None unless every value is a number >= 0."""
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    if not pc.all(pc.match_substring_regex(trimmed, r"^\d+$")).as_py():
        return None
    return pc.cast(trimmed, pa.int64())


def _parse_texts(texts: pa.Array, parse: LineageCache) -> dict[str, tuple[str, ...]]:
    """Each distinct lineage text parsed once; a BadInputError means: use the line parser."""
    import pyarrow.compute as pc

    return {text: parse(text, "") for text in pc.unique(texts).to_pylist()}


def _resolve_taxids(
    taxids: pa.Array, taxdump: Path | None
) -> tuple[pa.Array, dict[str, tuple[str, ...]]]:
    """Taxids as text keys, and each key's lineage from the taxdump (KeyError: unknown)."""
    import pyarrow.compute as pc

    from tdstore.ingest.taxdump import TaxDump

    assert taxdump is not None
    used = {t for t in pc.unique(taxids).to_pylist() if t != 0}
    dump = TaxDump.load(taxdump)
    if dump.missing(used):
        raise KeyError("unknown taxid")
    lineages = dump.lineages(used)
    texts = pc.cast(taxids, pa.string())
    return texts, {"0": (), **{str(t): lineage for t, lineage in lineages.items()}}


def _number_lineages(
    texts: pa.Array, lineage_of_text: dict[str, tuple[str, ...]]
) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """Per-row lineage keys numbered by first appearance, as the line parser numbers them."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(texts)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # Texts that normalise to the same lineage (d_X and d__X) share one key.
    tuple_id: dict[tuple[str, ...], int] = {(): 0}
    per_code = np.asarray(
        [
            tuple_id.setdefault(lineage_of_text[text], len(tuple_id))
            for text in encoded.dictionary.to_pylist()
        ],
        dtype=np.int64,
    )
    per_row = per_code[codes]
    distinct, first_rows = np.unique(per_row, return_index=True)
    by_tuple = {key: lineage for lineage, key in tuple_id.items()}
    # Key 0 is always the empty lineage; the others in order of their first row.
    others = [
        (row, key) for key, row in zip(distinct.tolist(), first_rows.tolist(), strict=True) if key
    ]
    others.sort()
    renumber = np.zeros(len(tuple_id), dtype=np.int64)
    lineages: list[tuple[str, ...]] = [()]
    first: list[int] = [0]
    for new, (row, key) in enumerate(others, start=1):
        renumber[key] = new
        lineages.append(by_tuple[key])
        first.append(row)
    return renumber[per_row], lineages, np.asarray(first, dtype=np.int64)
