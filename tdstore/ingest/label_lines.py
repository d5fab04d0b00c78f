"""What every label-file parser shares: the record it yields, line reading, lineage caching.

Kept apart from the parsers so that the name-based formats (:mod:`tdstore.ingest.labels`)
and the taxid-based ones (:mod:`tdstore.ingest.taxid_labels`) use one reader with one set of
error messages.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tdstore.errors import BadInputError
from tdstore.ingest.files import require_regular_file
from tdstore.taxonomy import parse_lineage

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


class LineageCache:
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


def not_taxids(text: str, where: str) -> None:
    """A lineage of taxids (MMseqs2 ``--tax-lineage 2``) would pass for bare names: refuse it."""
    elements = [e.strip() for e in text.split(";") if e.strip()]
    if elements and all(e.isdigit() for e in elements):
        raise BadInputError(
            f"{where}: the lineage is taxids ({text[:40]!r}); "
            "write it with names (MMseqs2 --tax-lineage 1, Metabuli --lineage 1)"
        )
