"""The taxonomy tree shared by every label set of a store, and lineage parsing.

Names are stored GTDB style, with a one-letter rank prefix and two underscores
(``g__Bacteroides``), whatever the input used (MMseqs2 writes ``g_Bacteroides``,
Taxometer files may carry bare names)::

    tax = Taxonomy.empty()
    leaf = tax.add_lineage(parse_lineage("d_Bacteria;p_Bacillota", where="x.tsv:2"), where="x.tsv:2")
    tax.lineage_names(leaf)  # ('d__Bacteria', 'p__Bacillota')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tdstore.errors import BadInputError

RANKS: tuple[str, ...] = ("domain", "phylum", "class", "order", "family", "genus", "species")
RANK_LETTERS = "dpcofgs"
ROOT_ID = 0
ROOT_NAME = "root"

# Rank letters MMseqs2/NCBI use that are not among the seven: kingdom, no rank,
# subspecies/strain, realm (viruses).
_IGNORED_LETTERS = {"k", "-", "t", "x", "n", "r"}
# Metabuli's --lineage 1 also writes the in-between ranks, with two letters: subspecies,
# subgenus, subfamily, suborder, subclass, subphylum, subkingdom.
_IGNORED_PREFIXES = re.compile(r"^(?:ss|sg|sf|so|sc|sp|sk)_(?!_)\S")
_PREFIXED = re.compile(r"^([A-Za-z-])_{1,2}(.*)$")
NCBI_DOMAINS = frozenset({"Bacteria", "Archaea", "Eukaryota", "Viruses"})


def parse_lineage(text: str, *, where: str, fill_gaps: bool = False) -> tuple[str, ...]:
    """Turn a ``;``-separated lineage into normalised names, domain first.

    Accepts ``d_X`` (MMseqs2), ``d__X`` (GTDB) and bare names (placed by position).
    An empty text or ``unclassified`` is the empty lineage. A gap (``d__A;;c__B``
    or ``d__A;c__B``) is an error naming ``where``, unless ``fill_gaps``: NCBI lineages
    (MMseqs2's) lack ranks in places (candidate phyla without a class, say), and a
    missing rank between two named ones then gets the placeholder the CAMI importer
    gives it too, ``c__Foo (no class)`` after the nearest named ancestor (``d__A;c__B``
    becomes ``d__A;p__A (no phylum);c__B``). An empty element stays an error.
    """
    text = text.strip()
    if not text or text.lower() in {"unclassified", "root", "na", "n/a"}:
        return ()
    names: list[str] = []
    ended_at: str | None = None
    for raw in text.split(";"):
        element = raw.strip()
        if _IGNORED_PREFIXES.match(element):
            continue
        match = _PREFIXED.match(element)
        if match and (
            match.group(1).lower() in RANK_LETTERS or match.group(1).lower() in _IGNORED_LETTERS
        ):
            letter, bare = match.group(1).lower(), match.group(2).strip()
            if letter == "-" and not names and bare in NCBI_DOMAINS:
                # NCBI's 2025 rank "domain" is unknown to older MMseqs2/Metabuli builds,
                # which write the domain as "-_Bacteria" (no rank).
                letter = "d"
            elif letter in _IGNORED_LETTERS:
                continue
            # A GTDB taxdump's names carry their prefix already: Metabuli writes s_s__X.
            bare = strip_rank_prefix(bare, letter)
            position = RANK_LETTERS.index(letter)
        else:
            letter, bare = None, element
            position = len(names)
            if element.lower() in {"root", "cellular organisms"} and not names:
                continue
        if not bare:
            # GTDB leaves empty ranks as 's__'; the lineage stops there.
            ended_at = ended_at or element or "(empty)"
            continue
        if ended_at is not None:
            raise BadInputError(
                f"{where}: skipped rank in lineage {text!r} (empty element before {element!r})"
            )
        if position >= len(RANKS):
            raise BadInputError(f"{where}: lineage {text!r} has more than {len(RANKS)} ranks")
        if fill_gaps and letter is not None and position > len(names):
            named = names[-1].split("__", 1)[1] if names else ""
            names += [
                f"{RANK_LETTERS[gap]}__{named} (no {RANKS[gap]})".replace("__ ", "__")
                for gap in range(len(names), position)
            ]
        if position != len(names):
            expected = RANKS[len(names)]
            raise BadInputError(
                f"{where}: skipped rank in lineage {text!r}: expected {expected} but found {element!r}"
            )
        names.append(f"{RANK_LETTERS[position]}__{bare}")
    return tuple(names)


def strip_rank_prefix(name: str, letter: str) -> str:
    """``s__Escherichia coli`` -> ``Escherichia coli`` for letter ``s``; other names as they are.

    GTDB-based taxdumps (gtdb_to_taxdump, used for Kraken2 and Metabuli GTDB databases)
    name taxa with their prefix, which tdstore adds itself.
    """
    prefix = f"{letter}__"
    return name[len(prefix) :].strip() if name.lower().startswith(prefix) else name


def format_lineage(names: Sequence[str]) -> str:
    return ";".join(names)


class Taxonomy:
    """A rooted tree of named taxa with one rank each; id 0 is the root.

    Taxon ids are stable: adding lineages only appends, so label sets imported
    earlier keep their meaning.
    """

    def __init__(self, names: list[str], ranks: list[str], parents: list[int]):
        self.names = names
        self.ranks = ranks
        self.parents = parents
        self.by_name = {name: i for i, name in enumerate(names)}

    @classmethod
    def empty(cls) -> Taxonomy:
        return cls([ROOT_NAME], ["root"], [-1])

    def __len__(self) -> int:
        return len(self.names)

    def copy(self) -> Taxonomy:
        return Taxonomy(list(self.names), list(self.ranks), list(self.parents))

    def add_lineage(
        self,
        names: Sequence[str],
        *,
        where: str,
        homonyms: list[tuple[str, str, str]] | None = None,
    ) -> int:
        """Add a normalised lineage; returns the id of its deepest taxon (0 if empty).

        A name already in the tree under another parent is an error (GTDB names are
        unique: it means inconsistent input), unless ``homonyms`` is given: NCBI reuses
        names across kingdoms (*Bacillus* the bacterium and the stick insect), so the
        newcomer becomes ``g__Bacillus (Bacillidae)``, after its parent, and
        ``(name, qualified name, where)`` is appended to ``homonyms``.
        """
        parent = ROOT_ID
        under_homonym = False
        for depth, name in enumerate(names):
            rank = RANKS[depth]
            taxon = self._child(name, parent, where, homonyms, under_homonym)
            if taxon is None:
                taxon = len(self.names)
                self.names.append(
                    name if name not in self.by_name else self._qualified(name, parent)
                )
                self.ranks.append(rank)
                self.parents.append(parent)
                self.by_name[self.names[taxon]] = taxon
                if self.names[taxon] != name and homonyms is not None:
                    homonyms.append((name, self.names[taxon], where))
            under_homonym = under_homonym or self.names[taxon] != name
            parent = taxon
        return parent

    def _child(
        self,
        name: str,
        parent: int,
        where: str,
        homonyms: list[tuple[str, str, str]] | None,
        under_homonym: bool,
    ) -> int | None:
        """The taxon ``name`` under ``parent`` if the tree has it; None if it is to be added.

        Only one rank of a lineage may be a homonym: names below one that clash again
        mean the same taxa placed differently (another taxonomy version), not homonyms.
        """
        existing = self.by_name.get(name)
        if existing is None or self.parents[existing] == parent:
            return existing
        if homonyms is None or under_homonym:
            hint = (
                f" (below the homonym {self.names[parent]!r}: are these labels from another "
                "taxonomy version than the store's?)"
                if under_homonym
                else ""
            )
            raise BadInputError(
                f"{where}: ambiguous taxonomy: taxon {name!r} has two parents, "
                f"{self.names[self.parents[existing]]!r} and {self.names[parent]!r}{hint}"
            )
        qualified = self._qualified(name, parent)
        existing = self.by_name.get(qualified)
        if existing is not None and self.parents[existing] != parent:
            raise BadInputError(
                f"{where}: ambiguous taxonomy: {qualified!r} has two parents, "
                f"{self.names[self.parents[existing]]!r} and {self.names[parent]!r}"
            )
        return existing

    def _qualified(self, name: str, parent: int) -> str:
        """``g__Bacillus`` under ``f__Bacillidae`` -> ``g__Bacillus (Bacillidae)``."""
        above = self.names[parent].split("__", 1)[-1] if parent != ROOT_ID else "root"
        return f"{name} ({above})"

    def id_of(self, name: str) -> int | None:
        return self.by_name.get(name)

    def depth(self, taxon_id: int) -> int:
        return 0 if taxon_id == ROOT_ID else RANKS.index(self.ranks[taxon_id]) + 1

    def lineage_ids(self, taxon_id: int) -> list[int]:
        """Ids from the domain down to ``taxon_id`` (empty for the root)."""
        out = []
        while taxon_id != ROOT_ID:
            out.append(taxon_id)
            taxon_id = self.parents[taxon_id]
        return out[::-1]

    def lineage_names(self, taxon_id: int) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.lineage_ids(taxon_id))

    def rank_matrix(self, taxon_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(n, 7) int64 matrix: the ancestor id at each rank, -1 below the taxon's depth."""
        ids = np.asarray(
            list(taxon_ids) if not isinstance(taxon_ids, np.ndarray) else taxon_ids, dtype=np.int64
        )
        table = self._ancestor_table()
        return table[ids]

    def _ancestor_table(self) -> np.ndarray:
        cache = getattr(self, "_ancestors", None)
        if cache is not None and cache.shape[0] == len(self.names):
            return cache
        table = np.full((len(self.names), len(RANKS)), -1, dtype=np.int64)
        for taxon in range(1, len(self.names)):  # parents always precede children
            parent = self.parents[taxon]
            if parent != ROOT_ID:
                table[taxon] = table[parent]
            table[taxon, RANKS.index(self.ranks[taxon])] = taxon
        self._ancestors = table
        return table

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "taxon_id": pa.array(np.arange(len(self.names), dtype=np.int64)),
                "rank": pa.array(self.ranks, pa.string()),
                "name": pa.array(self.names, pa.string()),
                "parent_id": pa.array([None if p < 0 else p for p in self.parents], pa.int64()),
            }
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> Taxonomy:
        ids = table.column("taxon_id").to_pylist()
        if ids != list(range(len(ids))):
            raise ValueError("taxonomy table ids must be dense 0..n-1 in order")
        parents = [-1 if p is None else p for p in table.column("parent_id").to_pylist()]
        return cls(table.column("name").to_pylist(), table.column("rank").to_pylist(), parents)


@dataclass(frozen=True)
class Hierarchy:
    """The tree built from one set of labels, as a flat softmax over its leaves needs it.

    Leaves are numbered in depth-first order so every node's leaves form one
    contiguous range ``[start, end)``: a node's probability is a difference of two
    cumulative sums, with no node x leaf matrix (GTDB has 143k species).
    """

    leaf_ids: np.ndarray  # (L,) taxon ids in DFS order
    node_ids: np.ndarray  # (M,) every non-root node, DFS preorder
    node_depth: np.ndarray  # (M,) 1 = domain ... 7 = species
    node_parent: np.ndarray  # (M,) index into node_ids, -1 for domains
    start: np.ndarray  # (M,) first leaf index
    end: np.ndarray  # (M,) one past the last leaf index
    node_index: dict[int, int]

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_ids.shape[0])

    @classmethod
    def from_labels(cls, taxonomy: Taxonomy, label_ids: Iterable[int]) -> Hierarchy:
        present: set[int] = set()
        for taxon in set(int(t) for t in label_ids):
            while taxon != ROOT_ID and taxon not in present:
                present.add(taxon)
                taxon = taxonomy.parents[taxon]
        children: dict[int, list[int]] = {}
        for taxon in present:
            children.setdefault(taxonomy.parents[taxon], []).append(taxon)
        for kids in children.values():
            kids.sort(key=lambda t: taxonomy.names[t])
        leaves: list[int] = []
        nodes: list[int] = []
        depth: list[int] = []
        parent_pos: list[int] = []
        start: list[int] = []
        end: list[int] = []

        def visit(taxon: int, parent_index: int, level: int) -> None:
            index = len(nodes)
            nodes.append(taxon)
            depth.append(level)
            parent_pos.append(parent_index)
            start.append(len(leaves))
            end.append(-1)
            kids = children.get(taxon, [])
            if not kids:
                leaves.append(taxon)
            for kid in kids:
                visit(kid, index, level + 1)
            end[index] = len(leaves)

        for domain in children.get(ROOT_ID, []):
            visit(domain, -1, 1)
        return cls(
            leaf_ids=np.asarray(leaves, dtype=np.int64),
            node_ids=np.asarray(nodes, dtype=np.int64),
            node_depth=np.asarray(depth, dtype=np.int64),
            node_parent=np.asarray(parent_pos, dtype=np.int64),
            start=np.asarray(start, dtype=np.int64),
            end=np.asarray(end, dtype=np.int64),
            node_index={t: i for i, t in enumerate(nodes)},
        )

    def label_ranges(self, taxon_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leaf range of each label; the root (unclassified) spans all leaves (zero loss)."""
        taxon_ids = np.asarray(taxon_ids, dtype=np.int64)
        lo = np.zeros(taxon_ids.shape[0], dtype=np.int64)
        hi = np.full(taxon_ids.shape[0], self.n_leaves, dtype=np.int64)
        for i, taxon in enumerate(taxon_ids.tolist()):
            if taxon != ROOT_ID:
                index = self.node_index.get(taxon)
                if index is None:
                    raise KeyError(f"taxon {taxon} is not in this hierarchy")
                lo[i], hi[i] = self.start[index], self.end[index]
        return lo, hi

    def node_probabilities(self, leaf_probs: np.ndarray) -> np.ndarray:
        """(n, M) probability of every node = sum of its leaves' probabilities."""
        cumulative = np.zeros((leaf_probs.shape[0], self.n_leaves + 1), dtype=np.float64)
        np.cumsum(leaf_probs, axis=1, out=cumulative[:, 1:])
        return cumulative[:, self.end] - cumulative[:, self.start]

    def predict_chain(self, node_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """(n, 7) node indices of the predicted lineage (-1 where it stops).

        Walks down from the root taking the most probable child while its
        probability exceeds ``threshold`` (for >= 0.5 this is Taxometer's rule:
        every node above 0.5, which is always a nested chain).
        """
        n = node_probs.shape[0]
        chain = np.full((n, len(RANKS)), -1, dtype=np.int64)
        chosen = np.full(n, -1, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        for level in range(1, len(RANKS) + 1):
            at_level = np.flatnonzero(self.node_depth == level)
            if at_level.size == 0 or not alive.any():
                break
            probs = node_probs[:, at_level].copy()
            parent_ok = self.node_parent[at_level][None, :] == chosen[:, None]
            probs[~parent_ok] = -1.0
            best = probs.argmax(axis=1)
            best_prob = probs[np.arange(n), best]
            take = alive & (best_prob > threshold)
            chain[take, level - 1] = at_level[best[take]]
            chosen = np.where(take, at_level[best], -2)
            alive &= take
        return chain
