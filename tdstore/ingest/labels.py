"""Parsers of label files: Taxometer's taxonomy TSV, raw MMseqs2 ``--tax-lineage 1`` output
and CAMI binning gold standards. Each yields one :class:`LabelRecord` per data row::

    for record in read_labels("mmseqs_lca.tsv", "mmseqs2"):
        print(record.contig_id, record.lineage)  # ('d__Bacteria', 'p__Bacillota', ...)

Lineages are normalised by :func:`tdstore.taxonomy.parse_lineage` (GTDB style, domain
first); errors name the file and line. Plain or gzip files; CRLF tolerated.
"""

from __future__ import annotations

import array
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tdstore.errors import BadInputError, UsageError
from tdstore.ingest.files import require_regular_file
from tdstore.taxonomy import parse_lineage

FORMATS: tuple[str, ...] = ("taxometer", "mmseqs2", "cami")
TAXOMETER_HEADER = ("contigs", "predictions")
TAXOMETER_GOLD_HEADER = ("contigs", "predictions", "novel")
TAXOMETER_OUTPUT_HEADER = ("contigs", "predictions", "scores")
# MMseqs2 easy-taxonomy/taxonomy: nucleotide search writes 5 columns, protein/ORF mode 9.
MMSEQS2_COLUMNS = (5, 9)
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

OnBytes = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """One data row: the contig, its normalised lineage (empty = unclassified), its line."""

    contig_id: str
    lineage: tuple[str, ...]
    novel: bool | None
    line: int


def _open_binary(path: Path):
    # A regular file only: the gzip probe below would use up the start of a pipe.
    require_regular_file(path)
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def read_lines(path: Path, on_bytes: OnBytes | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end); CRLF and a UTF-8 BOM tolerated."""
    with _open_binary(path) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):  # noqa: B007 - used after the loop
                if on_bytes is not None:
                    on_bytes(len(raw))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadInputError(f"{path}:{number}: not UTF-8 text") from None
                if number == 1:
                    text = text.removeprefix("\ufeff")
                yield number, text.rstrip("\r\n")
        except (OSError, EOFError) as exc:  # truncated or damaged gzip
            raise BadInputError(f"{path}:{number + 1}: unreadable ({exc})") from None


class _LineageCache:
    """Label files repeat a few thousand lineages over millions of rows: parse each text once."""

    def __init__(
        self, check: Callable[[str, str], None] | None = None, *, fill_gaps: bool = False
    ) -> None:
        self._seen: dict[str, tuple[str, ...]] = {}
        self._check = check
        self._fill_gaps = fill_gaps

    def __call__(self, text: str, where: str) -> tuple[str, ...]:
        lineage = self._seen.get(text)
        if lineage is None:
            if self._check is not None:
                self._check(text, where)
            lineage = self._seen[text] = parse_lineage(text, where=where, fill_gaps=self._fill_gaps)
        return lineage


def _not_taxids(text: str, where: str) -> None:
    """``--tax-lineage 2`` writes taxids, which would pass for bare names."""
    elements = [e.strip() for e in text.split(";") if e.strip()]
    if elements and all(e.isdigit() for e in elements):
        raise BadInputError(
            f"{where}: the lineage is taxids ({text[:40]!r}); "
            "run MMseqs2 with --tax-lineage 1 for names"
        )


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
            "not a taxonomy to learn from; give the labels Taxometer was trained on"
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
    lineage_of = _LineageCache()
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


def parse_mmseqs2(path: Path | str, on_bytes: OnBytes | None = None) -> Iterator[LabelRecord]:
    """MMseqs2 ``taxonomy --tax-lineage 1`` output: no header, the lineage is the last column.

    With an NCBI database the lineages lack ranks in places; those gaps are filled
    (:func:`parse_lineage` ``fill_gaps``) as the CAMI importer fills them.
    """
    path = Path(path)
    lineage_of = _LineageCache(check=_not_taxids, fill_gaps=True)
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


def parse_cami(
    path: Path | str, taxdump: Path | str, on_bytes: OnBytes | None = None
) -> Iterator[LabelRecord]:
    """CAMI (bioboxes) binning gold standard; TAXIDs resolved through an NCBI taxdump."""
    from tdstore.ingest.taxdump import TaxDump

    path = Path(path)
    columns: list[str] | None = None
    id_col = taxid_col = -1
    contig_ids: list[str] = []
    taxids = array.array("q")
    numbers = array.array("q")
    for number, text in read_lines(path, on_bytes):
        where = f"{path}:{number}"
        if not text.strip() or text.startswith("#"):
            continue
        if text.startswith("@@"):
            columns = [c.strip().upper() for c in text[2:].split("\t")]
            for needed in ("SEQUENCEID", "TAXID"):
                if needed not in columns:
                    raise BadInputError(
                        f"{where}: the @@ column line has no {needed} column "
                        f"(found {', '.join(columns)})"
                    )
            id_col, taxid_col = columns.index("SEQUENCEID"), columns.index("TAXID")
            continue
        if text.startswith("@"):
            continue  # @Version:, @SampleID:, @TaskID: ...
        if columns is None:
            raise BadInputError(
                f"{where}: data row before the '@@SEQUENCEID<TAB>BINID<TAB>TAXID' column line; "
                "not a CAMI binning file?"
            )
        fields = text.split("\t")
        if len(fields) != len(columns):
            raise BadInputError(
                f"{where}: expected {len(columns)} tab-separated columns "
                f"({', '.join(columns)}), found {len(fields)}"
            )
        contig_id = fields[id_col].strip()
        if not contig_id:
            raise BadInputError(f"{where}: empty SEQUENCEID")
        raw = fields[taxid_col].strip()
        if raw.upper() in {"", "NA", "NONE"}:
            taxid = 0
        else:
            try:
                taxid = int(raw)
            except ValueError:
                raise BadInputError(f"{where}: TAXID must be a number, found {raw!r}") from None
            if taxid < 0:
                raise BadInputError(f"{where}: negative TAXID {taxid}")
        contig_ids.append(contig_id)
        taxids.append(taxid)
        numbers.append(number)
    if columns is None:
        raise BadInputError(
            f"{path}: no '@@SEQUENCEID<TAB>BINID<TAB>TAXID' column line; not a CAMI binning file"
        )
    dump = TaxDump.load(taxdump)
    missing = set(dump.missing(t for t in set(taxids) if t != 0))
    if missing:
        line = next(n for t, n in zip(taxids, numbers, strict=True) if t in missing)
        first = next(t for t in taxids if t in missing)
        raise BadInputError(
            f"{path}:{line}: TAXID {first} is not in {Path(taxdump) / 'nodes.dmp'} "
            f"({len(missing)} unknown TAXIDs in all; is it the taxdump the gold standard used?)"
        )
    lineages = dump.lineages(t for t in set(taxids) if t != 0)
    for contig_id, taxid, number in zip(contig_ids, taxids, numbers, strict=True):
        yield LabelRecord(contig_id, lineages.get(taxid, ()), None, number)


def check_format(format: str, taxdump: Path | str | None) -> None:
    """Refuse an unknown format, or a taxdump given where it is (not) needed."""
    if format not in FORMATS:
        raise UsageError(f"unknown label format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "cami" and taxdump is None:
        raise UsageError(
            "--format cami needs --taxdump DIR (the NCBI nodes.dmp/names.dmp of the gold standard)"
        )
    if format != "cami" and taxdump is not None:
        raise UsageError(f"--taxdump is only used with --format cami, not {format}")


def read_labels(
    path: Path | str,
    format: str,
    *,
    taxdump: Path | str | None = None,
    on_bytes: OnBytes | None = None,
) -> Iterator[LabelRecord]:
    """Records of any supported format; a contig listed twice or a file with no rows is an error."""
    path = Path(path)
    check_format(format, taxdump)
    if format == "taxometer":
        records = parse_taxometer(path, on_bytes)
    elif format == "mmseqs2":
        records = parse_mmseqs2(path, on_bytes)
    else:
        assert taxdump is not None
        records = parse_cami(path, taxdump, on_bytes)
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
