"""Genomes that carry the tree's signal in both sequence and composition.

An ancestral sequence is evolved down the tree. On each edge a fraction of positions
(larger for deeper splits) is redrawn from the child clade's own order-3 Markov chain,
whose transition probabilities drift from the parent's (and whose GC content shifts).
So sister clades share most of their sequence (nucleotide identity falls with the
depth of the split) and their k-mer composition differs hierarchically::

    genomes = evolve_genomes(tree, lengths, rng=np.random.default_rng(1))
    genomes[0]  # uint8 codes 0-3 (A, C, G, T) of species 0's genome
"""

from __future__ import annotations

import numpy as np

from tdstore.simulate.tree import Tree

# Per rank of the child (domain ... species): fraction of positions redrawn on the edge
# into that clade, s.d. of the drift of the Markov chain's logits, s.d. of the GC shift.
# Sibling species end up about 88% identical, genera of one family about 75%.
SUBSTITUTION = (1.0, 0.45, 0.35, 0.28, 0.22, 0.16, 0.06)
LOGIT_DRIFT = (0.6, 0.45, 0.4, 0.35, 0.3, 0.22, 0.12)
GC_SHIFT = (0.35, 0.3, 0.2, 0.15, 0.1, 0.08, 0.02)
ORDER = 3
N_CONTEXTS = 4**ORDER
_GC_DIRECTION = np.array([-1.0, 1.0, 1.0, -1.0])  # A, C, G, T
# Genes sit on both strands: blocks of the genome are stored reverse-complemented,
# so composition is roughly strand-symmetric as in real genomes.
_BLOCK_MEAN = 8000


def _positions(length: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions, each chosen with probability ``rate`` (geometric gaps: fast)."""
    if rate >= 1.0:
        return np.arange(length)
    expected = length * rate
    gaps = rng.geometric(rate, size=int(expected + 6 * np.sqrt(expected) + 16))
    positions = np.cumsum(gaps) - 1
    while positions[-1] < length - 1:  # rare: draw more gaps
        more = np.cumsum(rng.geometric(rate, size=int(16 + 0.1 * expected))) + positions[-1]
        positions = np.concatenate([positions, more])
    return positions[positions < length]


def _redraw(
    seq: np.ndarray, logits: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Copy ``seq`` with a fraction ``rate`` of positions redrawn from the Markov chain.

    A redrawn base depends on the previous three bases of the parent sequence (its
    order-3 context); the first three positions use context 0.
    """
    child = seq.copy()
    positions = _positions(len(seq), rate, rng)
    if len(positions) == 0:
        return child
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)[:, :3]
    inner = positions[positions >= ORDER]
    ctx = np.zeros(len(positions), dtype=np.intp)
    ctx[len(positions) - len(inner) :] = (
        16 * seq[inner - 3].astype(np.intp) + 4 * seq[inner - 2] + seq[inner - 1]
    )
    u = rng.random(len(positions))
    child[positions] = (u[:, None] >= cdf[ctx]).sum(axis=1).astype(np.uint8)
    return child


def _strand_map(length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index and complement mask that reverse-complement random blocks of a sequence."""
    index = np.arange(length)
    flip = np.zeros(length, dtype=bool)
    start = 0
    while start < length:
        end = min(length, start + int(rng.exponential(_BLOCK_MEAN)) + 500)
        if rng.random() < 0.5:
            index[start:end] = index[start:end][::-1]
            flip[start:end] = True
        start = end
    return index, flip


def evolve_genomes(
    tree: Tree, lengths: np.ndarray, *, rng: np.random.Generator, rotate: bool = True
) -> list[np.ndarray]:
    """One genome (uint8 codes) per species of ``tree``, of the given lengths.

    All clades evolve on one coordinate system of ``max(lengths)`` positions; each
    genome is then a random rotation of its prefix (unless not ``rotate``), so contigs
    of relatives are homologous but not at the same offsets.
    """
    full = int(lengths.max())
    children: dict[int, list[int]] = {}
    for node in range(1, tree.n_nodes):
        children.setdefault(int(tree.parents[node]), []).append(node)
    index, flip = _strand_map(full, rng)
    species_index = {int(node): i for i, node in enumerate(tree.species)}
    genomes: list[np.ndarray] = [np.empty(0, dtype=np.uint8)] * len(tree.species)

    root_logits = rng.normal(0.0, 0.3, size=(N_CONTEXTS, 4))
    root_seq = rng.integers(0, 4, size=full, dtype=np.uint8)

    def visit(node: int, seq: np.ndarray, logits: np.ndarray) -> None:
        for child in children.get(node, []):
            rank = int(tree.ranks[child])
            child_logits = (
                logits
                + rng.normal(0.0, LOGIT_DRIFT[rank], size=logits.shape)
                + rng.normal(0.0, GC_SHIFT[rank]) * _GC_DIRECTION
            )
            child_seq = _redraw(seq, child_logits, SUBSTITUTION[rank], rng)
            if rank == 0:
                # A second full pass brings the domain close to its chain's stationary mix.
                child_seq = _redraw(child_seq, child_logits, 1.0, rng)
            if child in species_index:
                i = species_index[child]
                oriented = np.where(flip, 3 - child_seq[index], child_seq[index])
                genome = oriented[: int(lengths[i])]
                shift = int(rng.integers(0, len(genome)))
                genomes[i] = np.roll(genome, shift if rotate else 0).astype(np.uint8)
            else:
                visit(child, child_seq, child_logits)

    visit(0, root_seq, root_logits)
    return genomes
