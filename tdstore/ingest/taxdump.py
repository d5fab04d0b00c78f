"""NCBI taxonomy dumps (``nodes.dmp``, ``names.dmp``) turned into 7-rank GTDB-style lineages.

Only the parent and rank of every node are held in memory (numpy arrays indexed by taxid);
names are read afterwards for the taxa a caller needs, so a full NCBI dump (2.5 M nodes) is fine::

    dump = TaxDump.load("taxdump/")
    dump.lineages([562])  # {562: ('d__Bacteria', 'p__Pseudomonadota', ..., 's__Escherichia coli')}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tdstore.errors import BadInputError
from tdstore.taxonomy import RANK_LETTERS, RANKS, Taxonomy, strip_rank_prefix

# NCBI renamed "superkingdom" to "domain" in 2025; both map to tdstore's domain.
RANK_CODES: dict[str, int] = {
    "superkingdom": 0,
    "domain": 0,
    **{rank: i for i, rank in enumerate(RANKS) if rank != "domain"},
}
_NO_RANK = -1
_MAX_DEPTH = 500
MAX_TAXID = (
    2**63 - 1
)  # taxids are stored as int64  # deeper than any real taxonomy: a longer walk means a cycle


def _dmp_batches(path: Path, n_fields: int) -> Iterator[tuple[np.ndarray, list[pa.Array]]]:
    """(line numbers, first ``n_fields`` columns as strings) per block of a dump file.

    The dumps are ``\\t|\\t``-separated with millions of rows: Arrow reads each line as one
    string and splits it in C++, several times faster than a Python loop.
    """
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    if not path.is_file():
        raise BadInputError(f"{path}: missing (expected an NCBI taxdump directory)")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty")
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=["line"], block_size=8 << 20),
            # One column per line: a delimiter no dump contains, no quoting.
            parse_options=pcsv.ParseOptions(
                delimiter="\x1f", quote_char=False, escape_char=False, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}),
        )
    except pa.ArrowInvalid as exc:
        raise BadInputError(f"{path}: unreadable ({exc})") from None
    first = 1
    with reader:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise BadInputError(f"{path}: unreadable near line {first} ({exc})") from None
            parts = pc.split_pattern(batch.column(0), "\t|\t", max_splits=n_fields)
            lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
            short = np.flatnonzero(lengths < n_fields)
            for i in short.tolist():
                # Blank lines (the last one, typically) are fine; anything else is not a dump row.
                if batch.column(0)[i].as_py().strip():
                    raise BadInputError(f"{path}:{first + i}: not a dump line ({n_fields} fields)")
            keep = lengths >= n_fields
            parts = parts.filter(pa.array(keep))
            columns = [pc.list_element(parts, k) for k in range(n_fields)]
            yield first + np.flatnonzero(keep), columns
            first += batch.num_rows


def _to_int(values: pa.Array, path: Path, lines: np.ndarray, what: str) -> np.ndarray:
    import pyarrow.compute as pc

    try:
        return pc.cast(pc.utf8_trim_whitespace(values), pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, value in enumerate(values.to_pylist()):
            if not value.strip().isdigit():
                raise BadInputError(
                    f"{path}:{lines[i]}: {what} {value!r} is not a number"
                ) from None
            if int(value) > MAX_TAXID:
                raise BadInputError(
                    f"{path}:{lines[i]}: {what} {value.strip()} is out of range"
                ) from None
        raise


# Placeholders for a rank a lineage lacks ("c__Foo (no class)") name nothing in a dump; a
# homonym the store named after its parent ("g__Bacillus (Bacillidae)") is "Bacillus" there.
_PLACEHOLDER = re.compile(r" \(no (?:" + "|".join(RANKS) + r")\)$")


def _without_qualifier(name: str) -> str | None:
    """``g__Bacillus (Bacillidae)`` -> ``g__Bacillus``; the qualifier may nest (a parent that
    is a placeholder: ``o__X (Y (no class))``). None if ``name`` has no final ``(...)``."""
    if not name.endswith(")"):
        return None
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[: i - 1] if i > 1 and name[i - 1] == " " else None
    return None


def _dump_names(name: str) -> tuple[str, ...]:
    """What a store name may be called in a dump: bare, with its prefix (GTDB dumps write
    ``g__Bacillus``), and a homonym also without the parent the store added."""
    if _PLACEHOLDER.search(name):
        return ()
    names = [name, name.split("__", 1)[-1]]
    unqualified = _without_qualifier(name)
    if unqualified:
        names += [unqualified, unqualified.split("__", 1)[-1]]
    return tuple(dict.fromkeys(names))


# NCBI's taxids are dense (2.7 M nodes, ids up to about 3.5 M): arrays indexed by taxid.
# gtdb-taxdump hashes names into ids up to 2^31: there the arrays hold the sorted ids.
_DENSE_SLOTS = 1 << 24


@dataclass(frozen=True)
class TaxDump:
    """Parent and tdstore rank code of every taxid of a dump.

    ``parent`` and ``rank`` are indexed by taxid when ``ids`` is None (dense dumps; -1 =
    not in the dump), else aligned with the sorted ``ids``: see :meth:`_slot`.
    """

    directory: Path
    parent: np.ndarray  # int64 parent taxid per slot
    rank: np.ndarray  # int8: 0 (domain) .. 6 (species), -1 for ranks tdstore skips
    ids: np.ndarray | None = None

    @classmethod
    def load(cls, directory: Path | str) -> TaxDump:
        directory = Path(directory)
        if not directory.is_dir():
            raise BadInputError(f"{directory}: not a directory (expected an NCBI taxdump)")
        import pyarrow.compute as pc

        path = directory / "nodes.dmp"
        codes = pa.array(list(RANK_CODES), pa.string())
        code_of = np.asarray(list(RANK_CODES.values()) + [_NO_RANK], dtype=np.int8)
        taxid_parts, parent_parts, rank_parts = [], [], []
        for lines, (taxid, parent, rank) in _dmp_batches(path, 3):
            taxid_parts.append(_to_int(taxid, path, lines, "tax_id"))
            parent_parts.append(_to_int(parent, path, lines, "parent tax_id"))
            rank = pc.utf8_trim(rank, characters=" \t|\r\n")  # last field may keep the "\t|"
            index = pc.index_in(rank, value_set=codes)
            rank_parts.append(code_of[pc.fill_null(index, len(RANK_CODES)).to_numpy()])
        if not taxid_parts or not sum(len(p) for p in taxid_parts):
            raise BadInputError(f"{path}: empty")
        ids = np.concatenate(taxid_parts)
        parents = np.concatenate(parent_parts)
        ranks = np.concatenate(rank_parts)
        if ids.min() < 0 or parents.min() < 0:
            raise BadInputError(f"{path}: negative taxid")
        size = int(max(ids.max(), parents.max())) + 1
        if size > max(_DENSE_SLOTS, 4 * len(ids)):
            order = np.argsort(ids, kind="stable")
            return cls(directory, parents[order], ranks[order], ids[order])
        parent = np.full(size, -1, dtype=np.int64)
        rank_code = np.full(size, _NO_RANK, dtype=np.int8)
        parent[ids] = parents
        rank_code[ids] = ranks
        return cls(directory, parent, rank_code)

    def _slot(self, taxid: int) -> int:
        """Where ``taxid`` is in ``parent`` and ``rank``; -1 if the dump lacks it."""
        if taxid <= 0:
            return -1
        if self.ids is None:
            return taxid if taxid < self.parent.shape[0] and self.parent[taxid] >= 0 else -1
        i = int(np.searchsorted(self.ids, taxid))
        return i if i < self.ids.shape[0] and int(self.ids[i]) == taxid else -1

    def __contains__(self, taxid: int) -> bool:
        return self._slot(taxid) >= 0

    def rank_of(self, taxid: int) -> int:
        """tdstore rank code of a taxid of the dump (-1: a rank tdstore skips)."""
        return int(self.rank[self._slot(taxid)])

    def missing(self, taxids: Iterable[int]) -> list[int]:
        return sorted(t for t in set(taxids) if t not in self)

    def ranked_ancestors(self, taxid: int) -> dict[int, int]:
        """rank code -> taxid of the taxon at that rank on the path to the root."""
        out: dict[int, int] = {}
        node = taxid
        for _ in range(_MAX_DEPTH):
            slot = self._slot(node)
            code = int(self.rank[slot])
            if code >= 0 and code not in out:
                out[code] = node
            up = int(self.parent[slot])
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
        import pyarrow.compute as pc

        names: dict[int, str] = {}
        wanted = pa.array(sorted(taxids), pa.int64())
        for lines, (taxid, name, _, name_class) in _dmp_batches(path, 4):
            # Most rows are synonyms and the like: select by class before parsing numbers.
            scientific = pc.starts_with(name_class, "scientific name")
            taxid, name = taxid.filter(scientific), name.filter(scientific)
            mask = scientific.to_numpy(zero_copy_only=False)
            ids = _to_int(taxid, path, lines[mask], "tax_id")
            hit = pc.is_in(pa.array(ids), value_set=wanted).to_numpy(zero_copy_only=False)
            for t, n in zip(ids[hit].tolist(), name.filter(hit).to_pylist(), strict=True):
                names[t] = n.strip()
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
                    named = strip_rank_prefix(names[anc[code]], letter)
                    lineage.append(f"{letter}__{named}")
                else:
                    lineage.append(f"{letter}__{named} (no {RANKS[code]})".replace("__ ", "__"))
            out[taxid] = tuple(lineage)
        return out

    def taxids_of(self, taxonomy: Taxonomy) -> dict[int, int]:
        """The dump's taxid of each store taxon it names: store taxon id -> taxid.

        A taxon matches a dump node of the same rank and scientific name (prefix off:
        ``g__Bacillus`` is ``Bacillus``) whose ranked ancestors agree with the taxon's
        nearest matched ancestor: the bacterial genus Bacillus, not the stick insect.
        Taxa are matched from the domains down, so every ancestor is settled first. A name
        with no node, or with several that agree equally, stays unmatched, as do the
        placeholders (``c__Foo (no class)``) that no dump names.
        """
        import pyarrow.compute as pc

        # Bare names, and the prefixed ones a GTDB taxdump uses.
        wanted = {n for name in taxonomy.names[1:] for n in _dump_names(name)}
        candidates: dict[str, list[int]] = {}
        path = self.directory / "names.dmp"
        value_set = pa.array(sorted(wanted), pa.string())
        for lines, (taxid, name, _, name_class) in _dmp_batches(path, 4):
            scientific = pc.starts_with(name_class, "scientific name")
            name = pc.utf8_trim_whitespace(name.filter(scientific))
            hit = pc.is_in(name, value_set=value_set)
            mask = scientific.to_numpy(zero_copy_only=False)
            ids = _to_int(taxid.filter(scientific), path, lines[mask], "tax_id")
            keep = hit.to_numpy(zero_copy_only=False)
            for t, n in zip(ids[keep].tolist(), name.filter(hit).to_pylist(), strict=True):
                candidates.setdefault(n, []).append(t)
        mapped: dict[int, int] = {}
        order = sorted(range(1, len(taxonomy)), key=taxonomy.depth)
        for taxon in order:
            name = taxonomy.names[taxon]
            code = taxonomy.depth(taxon) - 1
            found = [t for n in _dump_names(name) for t in candidates.get(n, [])]
            found = [t for t in set(found) if t in self and self.rank_of(t) == code]
            anchor = self._nearest_mapped(taxonomy, taxon, mapped)
            if anchor is not None:
                anchor_code, anchor_taxid = anchor
                found = [
                    t for t in found if self.ranked_ancestors(t).get(anchor_code) == anchor_taxid
                ]
            if len(found) == 1:
                mapped[taxon] = found[0]
        return mapped

    @staticmethod
    def _nearest_mapped(
        taxonomy: Taxonomy, taxon: int, mapped: dict[int, int]
    ) -> tuple[int, int] | None:
        """(rank code, taxid) of the closest ancestor of ``taxon`` that has a taxid."""
        node = taxonomy.parents[taxon]
        while node > 0:
            if node in mapped:
                return taxonomy.depth(node) - 1, mapped[node]
            node = taxonomy.parents[node]
        return None
