"""Parsers of label files, one per tool, and the dispatch between them.

Name-based formats live here: Taxometer's taxonomy TSV and raw MMseqs2 ``--tax-lineage 1``
output. Taxid-based ones (CAMI gold standards, Kraken2, Metabuli) live in
:mod:`tdstore.ingest.taxid_labels`. Each yields one :class:`LabelRecord` per data row::

    for record in read_labels("mmseqs_lca.tsv", "mmseqs2"):
        print(record.contig_id, record.lineage)  # ('d__Bacteria', 'p__Bacillota', ...)

Lineages are normalised by :func:`tdstore.taxonomy.parse_lineage` (GTDB style, domain
first); errors name the file and line. Plain or gzip files; CRLF tolerated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tdstore.errors import BadInputError, UsageError
from tdstore.ingest.label_lines import (
    LabelRecord,
    LineageCache,
    OnBytes,
    not_taxids,
    read_lines,
)
from tdstore.ingest.taxid_labels import parse_cami, parse_kraken2, parse_metabuli

__all__ = [
    "FORMATS",
    "LabelRecord",
    "check_format",
    "parse_cami",
    "parse_kraken2",
    "parse_metabuli",
    "parse_mmseqs2",
    "parse_taxometer",
    "parse_taxometer_output",
    "read_labels",
]

FORMATS: tuple[str, ...] = (
    "taxometer",
    "mmseqs2",
    "cami",
    "kraken2",
    "metabuli",
    "taxometer-output",
)
# Formats whose taxids need the taxdump of the database that made them (Metabuli: unless
# it wrote its own lineage column).
NEEDS_TAXDUMP = ("cami", "kraken2")
TAKES_TAXDUMP = ("cami", "kraken2", "metabuli")
TAXOMETER_HEADER = ("contigs", "predictions")
TAXOMETER_GOLD_HEADER = ("contigs", "predictions", "novel")
TAXOMETER_OUTPUT_HEADER = ("contigs", "predictions", "scores")
# MMseqs2 easy-taxonomy/taxonomy: nucleotide search writes 5 columns, protein/ORF mode 9.
MMSEQS2_COLUMNS = (5, 9)
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _looks_like_mmseqs2(fields: list[str]) -> bool:
    return len(fields) in (4, 5, 8, 9) and fields[1].strip().isdigit()


def _parse_novel(value: str, where: str) -> bool | None:
    value = value.strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadInputError(f"{where}: novel must be true or false, found {value!r}")


def parse_taxometer(path: Path | str, on_bytes: OnBytes | None = None) -> Iterator[LabelRecord]:
    """Taxometer's input TSV (``contigs``, ``predictions``[, ``novel``]); refuses its output."""
    path = Path(path)
    lines = read_lines(path, on_bytes)
    first = next(lines, None)
    if first is None or not first[1].strip():
        raise BadInputError(
            f"{path}:1: empty; expected the header 'contigs<TAB>predictions' on the first line"
        )
    header = tuple(field.strip() for field in first[1].split("\t"))
    if header == TAXOMETER_OUTPUT_HEADER:
        raise BadInputError(
            f"{path}:1: this is Taxometer OUTPUT (header contigs, predictions, scores), "
            "not a taxonomy to learn from; give the labels Taxometer was trained on "
            "(or, to evaluate Taxometer's calls, --format taxometer-output)"
        )
    if header not in (TAXOMETER_HEADER, TAXOMETER_GOLD_HEADER):
        hint = ""
        if _looks_like_mmseqs2(first[1].split("\t")):
            hint = "; this looks like MMseqs2 output: use --format mmseqs2"
        elif first[1].startswith("@"):
            hint = "; this looks like a CAMI gold standard: use --format cami"
        raise BadInputError(
            f"{path}:1: expected the header 'contigs<TAB>predictions' "
            f"(or 'contigs<TAB>predictions<TAB>novel'), found {first[1][:80]!r}{hint}"
        )
    width = len(header)
    lineage_of = LineageCache()
    for number, text in lines:
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = text.split("\t")
        # A trailing empty field (unclassified, or no novel flag) may have lost its tab.
        if len(fields) not in (width, width - 1):
            raise BadInputError(
                f"{where}: expected {width} tab-separated columns "
                f"({', '.join(header)}), found {len(fields)}"
            )
        contig_id = fields[0].strip()
        if not contig_id:
            raise BadInputError(f"{where}: empty contig id")
        lineage = lineage_of(fields[1], where) if len(fields) > 1 else ()
        novel = _parse_novel(fields[2], where) if len(fields) > 2 else None
        yield LabelRecord(contig_id, lineage, novel, number)


def parse_taxometer_output(
    path: Path | str, min_score: float | None = None, on_bytes: OnBytes | None = None
) -> Iterator[LabelRecord]:
    """Taxometer's result TSV (``contigs``, ``predictions``, ``scores``) as calls to compare.

    Taxometer writes the nodes above its own threshold (0.5), one score per node. With
    ``min_score`` each lineage stops before its first node scored ``<= min_score``
    (TaxDistill counts a call whose score is above 0.8), so ``tdstore evaluate --labels``
    judges Taxometer by the rule it applies to a run.
    """
    path = Path(path)
    lines = read_lines(path, on_bytes)
    first = next(lines, None)
    header = tuple(f.strip() for f in first[1].split("\t")) if first else ()
    if header != TAXOMETER_OUTPUT_HEADER:
        found = first[1][:80] if first else ""
        raise BadInputError(
            f"{path}:1: expected Taxometer's result header 'contigs<TAB>predictions<TAB>scores', "
            f"found {found!r}"
        )
    lineage_of = LineageCache()
    for number, text in lines:
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = text.split("\t")
        if len(fields) != 3:
            raise BadInputError(
                f"{where}: expected 3 tab-separated columns (contigs, predictions, scores), "
                f"found {len(fields)}"
            )
        contig_id, names, scores = (f.strip() for f in fields)
        if not contig_id:
            raise BadInputError(f"{where}: empty contig id")
        elements = names.split(";") if names else []
        values = _scores(scores, where) if scores else []
        if len(values) != len(elements):
            raise BadInputError(
                f"{where}: {len(elements)} taxa but {len(values)} scores; "
                "Taxometer writes one score per taxon"
            )
        if min_score is not None:
            keep = next((i for i, v in enumerate(values) if v <= min_score), len(values))
            elements = elements[:keep]
        lineage = lineage_of(";".join(elements), where) if elements else ()
        yield LabelRecord(contig_id, lineage, None, number)


def _scores(text: str, where: str) -> list[float]:
    values = []
    for part in text.split(";"):
        try:
            value = float(part)
        except ValueError:
            raise BadInputError(f"{where}: score {part[:20]!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise BadInputError(f"{where}: score {part} is outside [0, 1]")
        values.append(value)
    return values


def parse_mmseqs2(path: Path | str, on_bytes: OnBytes | None = None) -> Iterator[LabelRecord]:
    """MMseqs2 ``taxonomy --tax-lineage 1`` output: no header, the lineage is the last column.

    With an NCBI database the lineages lack ranks in places; those gaps are filled
    (:func:`parse_lineage` ``fill_gaps``) as the CAMI importer fills them.
    """
    path = Path(path)
    lineage_of = LineageCache(check=not_taxids, fill_gaps=True)
    for number, text in read_lines(path, on_bytes):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = text.split("\t")
        if number == 1 and tuple(f.strip() for f in fields[:2]) == TAXOMETER_HEADER:
            raise BadInputError(
                f"{where}: this is a Taxometer TSV (header contigs, predictions): "
                "use --format taxometer"
            )
        try:
            taxid = int(fields[1]) if len(fields) > 1 else None
        except ValueError:
            taxid = None
        # Unclassified rows end in an empty lineage whose tab may be missing.
        if taxid == 0 and len(fields) + 1 in MMSEQS2_COLUMNS:
            fields.append("")
        if len(fields) not in MMSEQS2_COLUMNS:
            raise BadInputError(
                f"{where}: expected 5 (nucleotide) or 9 (protein/ORF) tab-separated columns "
                f"of MMseqs2 taxonomy output, found {len(fields)}"
            )
        if taxid is None or taxid < 0:
            raise BadInputError(f"{where}: taxid (column 2) must be a number, found {fields[1]!r}")
        contig_id = fields[0].strip()
        if not contig_id:
            raise BadInputError(f"{where}: empty query id")
        text_lineage = fields[-1]
        if taxid == 0:
            lineage: tuple[str, ...] = ()
        else:
            lineage = lineage_of(text_lineage, where)
        yield LabelRecord(contig_id, lineage, None, number)


def check_format(format: str, taxdump: Path | str | None, min_score: float | None = None) -> None:
    """Refuse an unknown format, or a taxdump or score cut given where it is (not) needed."""
    if format not in FORMATS:
        raise UsageError(f"unknown label format {format!r}; use one of {', '.join(FORMATS)}")
    if min_score is not None:
        if format != "taxometer-output":
            raise UsageError(
                f"--min-score is only used with --format taxometer-output, not {format}"
            )
        if not 0.0 <= min_score < 1.0:
            raise UsageError(f"--min-score must be in [0, 1), not {min_score}")
    if format in NEEDS_TAXDUMP and taxdump is None:
        what = "of the gold standard" if format == "cami" else "of the Kraken2 database"
        raise UsageError(f"--format {format} needs --taxdump DIR (the nodes.dmp/names.dmp {what})")
    if format not in TAKES_TAXDUMP and taxdump is not None:
        raise UsageError(
            f"--taxdump is only used with --format {', '.join(TAKES_TAXDUMP)}, not {format}"
        )


def read_labels(
    path: Path | str,
    format: str,
    *,
    taxdump: Path | str | None = None,
    min_score: float | None = None,
    on_bytes: OnBytes | None = None,
) -> Iterator[LabelRecord]:
    """Records of any supported format; a contig listed twice or a file with no rows is an error."""
    path = Path(path)
    check_format(format, taxdump, min_score)
    if format == "taxometer":
        records = parse_taxometer(path, on_bytes)
    elif format == "taxometer-output":
        records = parse_taxometer_output(path, min_score, on_bytes)
    elif format == "mmseqs2":
        records = parse_mmseqs2(path, on_bytes)
    elif format == "metabuli":
        records = parse_metabuli(path, taxdump, on_bytes)
    else:
        assert taxdump is not None
        parse = parse_cami if format == "cami" else parse_kraken2
        records = parse(path, taxdump, on_bytes)
    first_line: dict[str, int] = {}
    for record in records:
        earlier = first_line.setdefault(record.contig_id, record.line)
        if earlier != record.line:
            raise BadInputError(
                f"{path}:{record.line}: contig {record.contig_id!r} is listed twice "
                f"(first at line {earlier})"
            )
        yield record
    if not first_line:
        raise BadInputError(f"{path}: no label rows")
