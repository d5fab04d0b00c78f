"""NCBI taxonomy dumps (``nodes.dmp``, ``names.dmp``) turned into 7-rank GTDB-style lineages.

Only the parent and rank of every node are held in memory (numpy arrays indexed by taxid);
names are read afterwards for the taxa a caller needs, so a full NCBI dump (2.5 M nodes) is fine::

    dump = TaxDump.load("taxdump/")
    dump.lineages([562])  # {562: ('d__Bacteria', 'p__Pseudomonadota', ..., 's__Escherichia coli')}
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdstore.errors import BadInputError
from tdstore.taxonomy import RANK_LETTERS, RANKS

# NCBI renamed "superkingdom" to "domain" in 2025; both map to tdstore's domain.
RANK_CODES: dict[str, int] = {
    "superkingdom": 0,
    "domain": 0,
    **{rank: i for i, rank in enumerate(RANKS) if rank != "domain"},
}
_NO_RANK = -1
_MAX_DEPTH = 500  # deeper than any real taxonomy: a longer walk means a cycle


def _dmp_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a ``\\t|\\t``-separated dump file; the ``\\t|`` end is dropped."""
    try:
        handle = path.open("r", encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        raise BadInputError(f"{path}: missing (expected an NCBI taxdump directory)") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.endswith("\t|"):
                line = line[:-2]
            if line:
                yield number, line.split("\t|\t")


@dataclass(frozen=True)
class TaxDump:
    """Parent and tdstore rank code of every taxid of a dump (-1: absent or another rank)."""

    directory: Path
    parent: np.ndarray  # int64, indexed by taxid; -1 = taxid not in the dump
    rank: np.ndarray  # int8: 0 (domain) .. 6 (species), -1 for ranks tdstore skips

    @classmethod
    def load(cls, directory: Path | str) -> TaxDump:
        directory = Path(directory)
        if not directory.is_dir():
            raise BadInputError(f"{directory}: not a directory (expected an NCBI taxdump)")
        path = directory / "nodes.dmp"
        taxids, parents, ranks = array.array("q"), array.array("q"), array.array("b")
        for number, fields in _dmp_lines(path):
            try:
                taxid, parent = int(fields[0]), int(fields[1])
                rank = fields[2].strip()
            except (IndexError, ValueError):
                raise BadInputError(
                    f"{path}:{number}: not a nodes.dmp line (tax_id | parent | rank | ...)"
                ) from None
            if taxid < 0 or parent < 0:
                raise BadInputError(f"{path}:{number}: negative taxid")
            taxids.append(taxid)
            parents.append(parent)
            ranks.append(RANK_CODES.get(rank, _NO_RANK))
        if not taxids:
            raise BadInputError(f"{path}: empty")
        ids = np.frombuffer(taxids, dtype=np.int64)
        size = int(max(ids.max(), np.frombuffer(parents, dtype=np.int64).max())) + 1
        parent = np.full(size, -1, dtype=np.int64)
        rank_code = np.full(size, _NO_RANK, dtype=np.int8)
        parent[ids] = np.frombuffer(parents, dtype=np.int64)
        rank_code[ids] = np.frombuffer(ranks, dtype=np.int8)
        return cls(directory, parent, rank_code)

    def __contains__(self, taxid: int) -> bool:
        return 0 < taxid < self.parent.shape[0] and self.parent[taxid] >= 0

    def missing(self, taxids: Iterable[int]) -> list[int]:
        return sorted(t for t in set(taxids) if t not in self)

    def ranked_ancestors(self, taxid: int) -> dict[int, int]:
        """rank code -> taxid of the taxon at that rank on the path to the root."""
        out: dict[int, int] = {}
        node = taxid
        for _ in range(_MAX_DEPTH):
            code = int(self.rank[node])
            if code >= 0 and code not in out:
                out[code] = node
            up = int(self.parent[node])
            if up == node or up <= 0:
                return out
            if up not in self:
                raise BadInputError(
                    f"{self.directory / 'nodes.dmp'}: taxid {node} has parent {up}, "
                    "which is not in the dump"
                )
            node = up
        raise BadInputError(f"{self.directory / 'nodes.dmp'}: cycle above taxid {taxid}")

    def scientific_names(self, taxids: set[int]) -> dict[int, str]:
        path = self.directory / "names.dmp"
        names: dict[int, str] = {}
        for number, fields in _dmp_lines(path):
            # Most rows are synonyms and the like: test the class before parsing anything.
            if fields[-1].strip() != "scientific name":
                continue
            try:
                taxid = int(fields[0])
            except ValueError:
                raise BadInputError(f"{path}:{number}: not a names.dmp line") from None
            if taxid in taxids:
                names[taxid] = fields[1].strip()
        absent = sorted(taxids - names.keys())
        if absent:
            raise BadInputError(
                f"{path}: no scientific name for taxid {absent[0]} ({len(absent)} taxids in all)"
            )
        return names

    def lineages(self, taxids: Iterable[int]) -> dict[int, tuple[str, ...]]:
        """GTDB-style lineage (``d__X``...) per taxid, down to its deepest of the 7 ranks.

        NCBI lineages may lack a rank in the middle (no class, say); tdstore's tree needs
        every rank, so the gap gets a placeholder named after the nearest named ancestor
        (``c__Foo (no class)``): one per ancestor, so the tree stays consistent.
        """
        wanted = {int(t) for t in taxids}
        missing = self.missing(wanted)
        if missing:
            raise KeyError(missing[0])
        ancestors = {t: self.ranked_ancestors(t) for t in wanted}
        names = self.scientific_names({a for anc in ancestors.values() for a in anc.values()})
        out: dict[int, tuple[str, ...]] = {}
        for taxid, anc in ancestors.items():
            if not anc:
                out[taxid] = ()
                continue
            lineage: list[str] = []
            named = ""
            for code in range(max(anc) + 1):
                letter = RANK_LETTERS[code]
                if code in anc:
                    named = names[anc[code]]
                    lineage.append(f"{letter}__{named}")
                else:
                    lineage.append(f"{letter}__{named} (no {RANKS[code]})".replace("__ ", "__"))
            out[taxid] = tuple(lineage)
        return out
