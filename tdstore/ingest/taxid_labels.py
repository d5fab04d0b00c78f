"""Label files that name taxa by taxid: CAMI gold standards, Kraken2 and Metabuli output.

A taxid means nothing without the taxonomy it came from, so these formats resolve taxids
through the taxdump (``nodes.dmp``, ``names.dmp``) of the database the tool ran with:
Kraken2's ``DB/taxonomy/``, Metabuli's ``DB/taxonomy/``, NCBI's for CAMI. Metabuli can
write the lineage itself (``--lineage 1``); then no taxdump is needed::

    for record in parse_kraken2("contigs.kraken2", taxdump="k2db/taxonomy"):
        print(record.contig_id, record.lineage)

Rows are read first and taxids resolved once at the end, so a taxid missing from the
taxdump is reported with the first line that uses it.
"""

from __future__ import annotations

import array
import re
from collections.abc import Iterator
from pathlib import Path

from tdstore.errors import BadInputError
from tdstore.ingest.label_lines import (
    LabelRecord,
    LineageCache,
    OnBytes,
    not_taxids,
    read_lines,
)
from tdstore.ingest.taxdump import MAX_TAXID, TaxDump

# Kraken2 --use-names writes "Escherichia coli (taxid 562)" where it would write "562".
_KRAKEN2_NAMED_TAXID = re.compile(r"\(taxid (\d+)\)\s*$")
KRAKEN2_COLUMNS = 5
# Metabuli's classifications.tsv: columns 1-3 are fixed in every version; e_value (1.2+)
# and lineage (--lineage 1) come and go, which the "#is_classified ..." header says.
METABULI_FIXED = ("is_classified", "name", "taxid")


class _TaxidRows:
    """Contig ids, taxids (0 = unclassified) and line numbers of a file, in file order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.contig_ids: list[str] = []
        self.taxids = array.array("q")
        self.numbers = array.array("q")

    def add(self, contig_id: str, taxid: int, number: int) -> None:
        self.contig_ids.append(contig_id)
        self.taxids.append(taxid)
        self.numbers.append(number)

    def resolve(self, taxdump: Path | str, what: str = "taxid") -> Iterator[LabelRecord]:
        """Records with lineages from the taxdump; an unknown taxid names its first line."""
        dump = TaxDump.load(taxdump)
        used = {t for t in set(self.taxids) if t != 0}
        missing = set(dump.missing(used))
        if missing:
            line, first = next(
                (n, t) for t, n in zip(self.taxids, self.numbers, strict=True) if t in missing
            )
            raise BadInputError(
                f"{self.path}:{line}: {what} {first} is not in {Path(taxdump) / 'nodes.dmp'} "
                f"({len(missing)} unknown {what}s in all; is it the taxdump of the database "
                "that made this file?)"
            )
        lineages = dump.lineages(used)
        for contig_id, taxid, number in zip(
            self.contig_ids, self.taxids, self.numbers, strict=True
        ):
            yield LabelRecord(contig_id, lineages.get(taxid, ()), None, number)


def _taxid(raw: str, where: str, column: str) -> int:
    try:
        taxid = int(raw)
    except ValueError:
        raise BadInputError(f"{where}: {column} must be a number, found {raw[:40]!r}") from None
    if taxid < 0:
        raise BadInputError(f"{where}: negative {column} {taxid}")
    if taxid > MAX_TAXID:
        raise BadInputError(f"{where}: {column} {raw[:40]} is out of range")
    return taxid


def parse_cami(
    path: Path | str, taxdump: Path | str, on_bytes: OnBytes | None = None
) -> Iterator[LabelRecord]:
    """CAMI (bioboxes) binning gold standard; TAXIDs resolved through an NCBI taxdump."""
    path = Path(path)
    rows = _TaxidRows(path)
    columns: list[str] | None = None
    id_col = taxid_col = -1
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
        taxid = 0 if raw.upper() in {"", "NA", "NONE"} else _taxid(raw, where, "TAXID")
        rows.add(contig_id, taxid, number)
    if columns is None:
        raise BadInputError(
            f"{path}: no '@@SEQUENCEID<TAB>BINID<TAB>TAXID' column line; not a CAMI binning file"
        )
    yield from rows.resolve(taxdump, "TAXID")


def parse_kraken2(
    path: Path | str, taxdump: Path | str, on_bytes: OnBytes | None = None
) -> Iterator[LabelRecord]:
    """Kraken2's per-sequence output (``--output``): ``C/U``, id, taxid, length, k-mer LCAs.

    The taxid column may be a bare taxid or, with ``--use-names``, ``name (taxid N)``.
    Kraken2 output has no header; a Kraken2 *report* (``--report``) is refused, since it
    counts reads per taxon and says nothing about single contigs.
    """
    path = Path(path)
    rows = _TaxidRows(path)
    for number, text in read_lines(path, on_bytes):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = text.split("\t")
        status = fields[0].strip()
        if status not in ("C", "U"):
            raise BadInputError(f"{where}: {_kraken2_hint(fields, status)}")
        if len(fields) != KRAKEN2_COLUMNS:
            raise BadInputError(
                f"{where}: expected {KRAKEN2_COLUMNS} tab-separated columns of Kraken2 output "
                f"(C/U, sequence id, taxid, length, k-mer LCAs), found {len(fields)}"
            )
        contig_id = fields[1].strip()
        if not contig_id:
            raise BadInputError(f"{where}: empty sequence id")
        raw = fields[2].strip()
        named = _KRAKEN2_NAMED_TAXID.search(raw)
        taxid = _taxid(named.group(1) if named else raw, where, "taxid (column 3)")
        rows.add(contig_id, 0 if status == "U" else taxid, number)
    yield from rows.resolve(taxdump)


def _kraken2_hint(fields: list[str], status: str) -> str:
    """Why a line is not Kraken2 output, with the format it looks like."""
    message = f"column 1 must be C (classified) or U (unclassified), found {status[:20]!r}"
    second = fields[1].strip() if len(fields) > 1 else ""
    if status.lstrip("#").lower().startswith("is_classified") or (
        status in ("0", "1") and second and not second.isdigit()
    ):
        return message + "; this looks like Metabuli output: use --format metabuli"
    if re.fullmatch(r"\d+(\.\d+)?", status) and second.isdigit():
        return message + "; this looks like a Kraken2 report (--report): give its --output"
    return message + "; not Kraken2 --output?"


def parse_metabuli(
    path: Path | str, taxdump: Path | str | None = None, on_bytes: OnBytes | None = None
) -> Iterator[LabelRecord]:
    """Metabuli's ``JOBID_classifications.tsv``.

    With ``taxdump`` (the database's ``taxonomy/`` folder) taxids are resolved through it;
    without, the lineage column that ``metabuli classify --lineage 1`` writes is used.
    Unclassified rows may be short (no match list); only the first three columns are needed.
    """
    path = Path(path)
    rows = _TaxidRows(path)
    lineage_col: int | None = None
    lineage_of = LineageCache(check=not_taxids, fill_gaps=True)
    header_seen = data_seen = False
    for number, text in read_lines(path, on_bytes):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = text.split("\t")
        if text.startswith("#"):
            if header_seen or data_seen:
                raise BadInputError(f"{where}: a second header line")
            header_seen = True
            names = [f.strip().lstrip("#").strip().lower() for f in fields]
            if tuple(names[:3]) not in (METABULI_FIXED, ("query_id", "name", "taxid")):
                raise BadInputError(
                    f"{where}: expected Metabuli's header '#is_classified<TAB>name<TAB>taxID...', "
                    f"found {text[:80]!r}"
                )
            lineage_col = names.index("lineage") if "lineage" in names else None
            continue
        data_seen = True
        flag = fields[0].strip()
        if flag not in ("0", "1"):
            hint = ""
            if flag in ("C", "U"):
                hint = "; this looks like Kraken2 output: use --format kraken2"
            raise BadInputError(
                f"{where}: column 1 (is_classified) must be 0 or 1, found {flag[:20]!r}{hint}"
            )
        if len(fields) < 3:
            raise BadInputError(
                f"{where}: expected at least 3 tab-separated columns "
                f"(is_classified, name, taxID), found {len(fields)}"
            )
        contig_id = fields[1].strip()
        if not contig_id:
            raise BadInputError(f"{where}: empty name (column 2)")
        taxid = _taxid(fields[2].strip(), where, "taxID (column 3)")
        if flag == "0":
            taxid = 0
        if taxdump is not None:
            rows.add(contig_id, taxid, number)
            continue
        if lineage_col is None:
            raise BadInputError(
                f"{where}: no lineage column in this Metabuli output; give --taxdump "
                "DB/taxonomy (the database's nodes.dmp and names.dmp) or classify with --lineage 1"
            )
        lineage: tuple[str, ...] = ()
        if taxid != 0:
            if len(fields) <= lineage_col:
                raise BadInputError(
                    f"{where}: a classified row without column {lineage_col + 1} (lineage)"
                )
            lineage = lineage_of(fields[lineage_col], where)
        yield LabelRecord(contig_id, lineage, None, number)
    if taxdump is not None:
        yield from rows.resolve(taxdump, "taxID")
