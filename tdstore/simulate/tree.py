"""A random 7-rank taxonomy tree with GTDB-like names, for the simulator.

Nodes are numbered in DFS preorder with the root as node 0, so a node's NCBI-style
taxid is simply ``node + 1`` (root taxid 1) and every clade is a contiguous id range::

    tree = build_tree(200, rng=np.random.default_rng(0))
    tree.lineage_gtdb(tree.species[0])  # 'd__Bacteria;p__Simphylum1;...;s__Simgenus1 sp1'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tdstore.taxonomy import RANK_LETTERS, RANKS

NCBI_RANKS: tuple[str, ...] = (
    "superkingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
)
_DOMAIN_NAMES = ("Bacteria", "Archaea")
_RANK_STEMS = ("Simdomain", "Simphylum", "Simclass", "Simorder", "Simfamily", "Simgenus")
SPECIES_RANK = len(RANKS) - 1


@dataclass(frozen=True)
class Tree:
    """Parallel arrays over nodes; ``ancestors[s]`` is species ``s``'s lineage as node ids."""

    names: tuple[str, ...]  # bare names (``Simgenus12``, ``Simgenus12 sp3``); root is "root"
    ranks: np.ndarray  # int8: -1 for the root, else an index into RANKS
    parents: np.ndarray  # int32: the root is its own parent
    species: np.ndarray  # int32 node ids of the leaves (all species), in DFS order
    ancestors: np.ndarray  # (n_species, 7) int32 node ids, domain first

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    def taxid(self, node: int) -> int:
        return node + 1

    def lineage_nodes(self, node: int) -> list[int]:
        """Node ids from the domain down to ``node`` (empty for the root)."""
        chain = []
        while node != 0:
            chain.append(node)
            node = int(self.parents[node])
        return chain[::-1]

    def lineage_gtdb(self, node: int) -> str:
        """``d__X;p__Y;...`` (two underscores), as Taxometer and GTDB write it."""
        return ";".join(
            f"{RANK_LETTERS[self.ranks[n]]}__{self.names[n]}" for n in self.lineage_nodes(node)
        )

    def lineage_mmseqs(self, node: int) -> str:
        """``d_X;p_Y;...`` (one underscore), as MMseqs2's ``--tax-lineage 1`` writes it."""
        return ";".join(
            f"{RANK_LETTERS[self.ranks[n]]}_{self.names[n]}" for n in self.lineage_nodes(node)
        )


def default_species_count(n_contigs: int) -> int:
    """About 200 species for 20k contigs, growing mildly (power 0.35) with the data set."""
    return int(np.clip(round(200 * (max(n_contigs, 1) / 20000) ** 0.35), 8, 2000))


def _split(count: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``count`` items into ``parts`` non-empty groups of random (Dirichlet) sizes."""
    if parts <= 1:
        return [count]
    extra = rng.multinomial(count - parts, rng.dirichlet(np.full(parts, 1.5)))
    return [1 + int(e) for e in extra]


def build_tree(n_species: int, *, rng: np.random.Generator, n_domains: int = 2) -> Tree:
    """A tree with exactly ``n_species`` leaves, branching roughly evenly per rank.

    The first domain (Bacteria) holds most species, as in real gut metagenomes. At
    each inner node the number of children is about ``count ** (1 / ranks_left)``
    with log-normal jitter, so genera hold 1 to a handful of species.
    """
    if n_species < n_domains:
        raise ValueError(f"need at least {n_domains} species, got {n_species}")
    names: list[str] = ["root"]
    ranks: list[int] = [-1]
    parents: list[int] = [0]
    counters = [0] * len(RANKS)
    lineages: list[list[int]] = []
    n_children: dict[int, int] = {}

    def add(parent: int, rank: int, name: str) -> int:
        names.append(name)
        ranks.append(rank)
        parents.append(parent)
        return len(names) - 1

    def grow(parent: int, rank: int, count: int, path: list[int]) -> None:
        counters[rank] += 1
        if rank == 0:
            name = (
                _DOMAIN_NAMES[counters[0] - 1]
                if counters[0] <= len(_DOMAIN_NAMES)
                else f"{_RANK_STEMS[0]}{counters[0]}"
            )
        elif rank == SPECIES_RANK:
            genus = names[path[-1]]
            n_children[path[-1]] = n_children.get(path[-1], 0) + 1
            name = f"{genus} sp{n_children[path[-1]]}"
        else:
            name = f"{_RANK_STEMS[rank]}{counters[rank]}"
        node = add(parent, rank, name)
        path = [*path, node]
        if rank == SPECIES_RANK:
            lineages.append(path)
            return
        ranks_left = SPECIES_RANK - rank
        if ranks_left == 1:
            children = count
        else:
            jitter = float(np.exp(rng.normal(0.0, 0.35)))
            children = int(np.clip(round(count ** (1.0 / ranks_left) * jitter), 1, count))
        for part in _split(count, children, rng):
            grow(node, rank + 1, part, path)

    bacteria = max(1, round(n_species * 0.8)) if n_domains > 1 else n_species
    shares = [bacteria] + _split(n_species - bacteria, n_domains - 1, rng)
    for share in shares:
        grow(0, 0, share, [])

    ancestors = np.asarray(lineages, dtype=np.int32)
    return Tree(
        names=tuple(names),
        ranks=np.asarray(ranks, dtype=np.int8),
        parents=np.asarray(parents, dtype=np.int32),
        species=ancestors[:, -1].copy(),
        ancestors=ancestors,
    )
