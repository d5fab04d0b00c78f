"""Noisy labels that behave like MMseqs2 against a reference missing some species.

The simulated reference holds the "known" species only, so a label can only name a
taxon with a known descendant. Known species mostly get their full lineage; some are
truncated (more often when the contig is short), a few get a sibling species, some
stay unclassified. A novel species' contigs are truncated to the deepest taxon the
reference has, or, often, confidently called as the novel species' closest known
relative (the same relative for most of its contigs, as a real search would)::

    noise = LabelNoise()
    novel = choose_novel(tree, 0.25, rng)
    label = noisy_labels(tree, contigs.genome, contigs.length, novel, noise, rng)  # node or -1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tdstore.simulate.tree import SPECIES_RANK, Tree

GENUS, FAMILY, ORDER = SPECIES_RANK - 1, SPECIES_RANK - 2, SPECIES_RANK - 3


@dataclass(frozen=True)
class LabelNoise:
    """Rates of the label model; "short" terms scale with ``exp(-length / short_scale)``."""

    known_unclassified: float = 0.02
    known_truncated: float = 0.05
    known_wrong: float = 0.04
    novel_unclassified: float = 0.08
    novel_wrong: float = 0.35
    # Of the novel contigs not called wrong or unclassified: the share truncated to the
    # deepest reference taxon (usually the genus); the rest stop one or two ranks higher.
    novel_deepest_share: float = 0.6
    # The share of a novel species' wrong calls that go to its closest relative.
    novel_same_relative: float = 0.85
    short_penalty: float = 0.2
    short_scale: float = 3000.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def choose_novel(tree: Tree, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean per species: absent from the reference. At least one species stays known."""
    n = len(tree.species)
    n_novel = min(n - 1, round(fraction * n))
    novel = np.zeros(n, dtype=bool)
    novel[rng.choice(n, size=n_novel, replace=False)] = True
    return novel


def _reference_depth(tree: Tree, novel: np.ndarray) -> np.ndarray:
    """Per species: the deepest rank (index) at which its ancestor has a known species.

    -1 if not even its domain is in the reference.
    """
    known_nodes = set(tree.ancestors[~novel].ravel().tolist())
    depth = np.full(len(tree.species), -1, dtype=np.int64)
    for s, lineage in enumerate(tree.ancestors):
        for rank in range(SPECIES_RANK, -1, -1):
            if int(lineage[rank]) in known_nodes:
                depth[s] = rank
                break
    return depth


def _relatives(tree: Tree, novel: np.ndarray) -> list[list[int]]:
    """Per species: the known species of its genus (other than itself), else of its family."""
    known = np.flatnonzero(~novel)
    known_genus = tree.ancestors[known, GENUS]
    known_family = tree.ancestors[known, FAMILY]
    out: list[list[int]] = []
    for s, lineage in enumerate(tree.ancestors):
        same_genus = known[(known_genus == lineage[GENUS]) & (known != s)].tolist()
        if same_genus or not novel[s]:
            # A known species' wrong call is only ever a sibling of its genus.
            out.append(same_genus)
        else:
            out.append(known[known_family == lineage[FAMILY]].tolist())
    return out


def noisy_labels(
    tree: Tree,
    genome: np.ndarray,
    length: np.ndarray,
    novel: np.ndarray,
    noise: LabelNoise,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per contig the node id of its label (any rank), or -1 for unclassified."""
    n = len(genome)
    ref_depth = _reference_depth(tree, novel)
    relatives = _relatives(tree, novel)
    closest = [int(rng.choice(r)) if r else -1 for r in relatives]
    short = np.exp(-length / noise.short_scale)
    u = rng.random(n)
    u_rank = rng.random(n)
    u_pick = rng.random(n)
    pick = rng.integers(0, 1 << 30, size=n)
    is_novel = novel[genome]
    p_uncl = np.where(is_novel, noise.novel_unclassified, noise.known_unclassified)
    p_uncl = p_uncl + 0.5 * noise.short_penalty * short
    p_wrong = np.where(is_novel, noise.novel_wrong, noise.known_wrong)
    p_trunc = np.where(is_novel, 1.0, noise.known_truncated + noise.short_penalty * short)

    labels = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        s = int(genome[i])
        lineage = tree.ancestors[s]
        top = int(ref_depth[s])
        if u[i] < p_uncl[i] or top < 0:
            continue
        x = u[i] - p_uncl[i]
        if x < p_wrong[i] and relatives[s]:
            if is_novel[i] and u_pick[i] < noise.novel_same_relative:
                other = closest[s]
            else:
                other = relatives[s][int(pick[i]) % len(relatives[s])]
            labels[i] = tree.species[other]
            continue
        if x < p_wrong[i] + p_trunc[i]:
            if is_novel[i]:
                rank = top if u_rank[i] < noise.novel_deepest_share else top - 1 - (u_rank[i] > 0.9)
            else:
                rank = GENUS if u_rank[i] < 0.7 else FAMILY if u_rank[i] < 0.9 else ORDER
            rank = min(rank, top)
            if rank >= 0:
                labels[i] = lineage[rank]
            continue
        labels[i] = lineage[SPECIES_RANK]
    return labels


def label_quality(
    tree: Tree, genome: np.ndarray, labels: np.ndarray, novel: np.ndarray
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Precision, recall and F1 of ``labels`` per rank (genus, species), all/known/novel.

    TaxDistill's definitions: a call at a rank exists if the label reaches that rank;
    precision = correct / (correct + wrong); recall = correct / contigs.
    """
    gold = tree.ancestors[genome]  # (n, 7)
    label_rank = np.where(labels >= 0, tree.ranks[np.maximum(labels, 0)], -1)
    label_node = np.where(labels >= 0, labels, 0)
    is_novel = novel[genome]
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for rank_name, rank in (("genus", GENUS), ("species", SPECIES_RANK)):
        called = label_rank >= rank
        # The label's ancestor at `rank`: walk up from the label node.
        node = label_node.copy()
        for _ in range(SPECIES_RANK):
            above = tree.ranks[node] > rank
            node = np.where(above, tree.parents[node], node)
        correct = called & (node == gold[:, rank])
        wrong = called & ~correct
        out[rank_name] = {}
        for group, mask in (
            ("all", np.ones_like(is_novel)),
            ("known", ~is_novel),
            ("novel", is_novel),
        ):
            c, w, total = int(correct[mask].sum()), int(wrong[mask].sum()), int(mask.sum())
            p = c / (c + w) if c + w else 0.0
            r = c / total if total else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            out[rank_name][group] = {
                "contigs": total,
                "correct": c,
                "wrong": w,
                "precision": round(p, 4),
                "recall": round(r, 4),
                "f1": round(f1, 4),
            }
    return out


def label_outcomes(
    tree: Tree, genome: np.ndarray, labels: np.ndarray, novel: np.ndarray
) -> dict[str, dict[str, float]]:
    """Shares of contigs (known / novel) per kind of label: the realised noise rates.

    ``correct``: the full true lineage; ``truncated``: a true lineage stopped above
    species; ``wrong_species``: a species other than the truth (``wrong_genus`` also
    counts those whose genus is wrong); ``unclassified``.
    """
    gold = tree.ancestors[genome]
    species_rank = np.where(labels >= 0, tree.ranks[np.maximum(labels, 0)], -1)
    is_species = species_rank == SPECIES_RANK
    correct = is_species & (labels == gold[:, SPECIES_RANK])
    wrong = is_species & ~correct
    label_genus = np.where(
        is_species, tree.parents[np.maximum(labels, 0)], -1
    )  # a species' parent is its genus
    wrong_genus = wrong & (label_genus != gold[:, GENUS])
    unclassified = labels < 0
    truncated = ~is_species & ~unclassified
    is_novel = novel[genome]
    out: dict[str, dict[str, float]] = {}
    for group, mask in (("known", ~is_novel), ("novel", is_novel)):
        total = max(int(mask.sum()), 1)
        out[group] = {
            "contigs": int(mask.sum()),
            "correct": round(int((correct & mask).sum()) / total, 4),
            "truncated": round(int((truncated & mask).sum()) / total, 4),
            "wrong_species": round(int((wrong & mask).sum()) / total, 4),
            "wrong_genus": round(int((wrong_genus & mask).sum()) / total, 4),
            "unclassified": round(int((unclassified & mask).sum()) / total, 4),
        }
    return out
