"""Samples, per-genome abundances and contigs drawn as fragments of the genomes.

Each sample has its own assembly: a contig belongs to one sample (vamb-style id
``S{n}C{m}``) but, as after multi-sample read mapping, has a depth in every sample::

    contigs = sample_contigs(genome_lengths, n_contigs=1000, n_samples=4, rng=rng)
    contigs.ids[0], contigs.depth.shape  # 'S1C1', (1000, 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contigs:
    """Parallel arrays over contigs, in output order (by sample, then contig number)."""

    ids: list[str]
    sample: np.ndarray  # int: 0-based sample index (the id's S{n} is sample + 1)
    genome: np.ndarray  # int: species / genome index
    start: np.ndarray  # int: 0-based start in the circular genome (may wrap around)
    length: np.ndarray  # int
    reverse: np.ndarray  # bool: reverse-complemented
    gap: np.ndarray  # (n, 2) int: a run of N at [gap0, gap1) inside the contig, or (0, 0)
    depth: np.ndarray  # (n, n_samples) float64: mean coverage depth per sample
    genome_depth: np.ndarray  # (n_genomes, n_samples): the true depths


def genome_depths(
    n_genomes: int, n_samples: int, *, presence: float, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal depths (median 8x); each genome is absent from some samples, never all."""
    depth = np.exp(rng.normal(np.log(8.0), 1.2, size=(n_genomes, n_samples)))
    present = rng.random((n_genomes, n_samples)) < presence
    # A genome absent everywhere would have no contigs at all: keep it in one sample.
    nowhere = ~present.any(axis=1)
    present[nowhere, rng.integers(0, n_samples, size=int(nowhere.sum()))] = True
    return np.where(present, depth, 0.0)


def _lengths(
    n: int,
    genome_lengths: np.ndarray,
    *,
    min_length: int,
    short_fraction: float,
    median: float,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Log-normal lengths >= ``min_length`` with a long tail, plus a share of short ones."""
    lengths = np.exp(rng.normal(np.log(median), sigma, size=n))
    # Redraw the too-short ones (a truncated log-normal) a few rounds, then clamp.
    for _ in range(20):
        low = lengths < min_length
        if not low.any():
            break
        lengths[low] = np.exp(rng.normal(np.log(median), sigma, size=int(low.sum())))
    lengths = np.maximum(lengths, min_length)
    short = rng.random(n) < short_fraction
    # Short contigs: log-uniform between 500 bp and just under the filter.
    lengths[short] = np.exp(rng.uniform(np.log(500), np.log(min_length), size=int(short.sum())))
    lengths = np.minimum(np.floor(lengths).astype(np.int64), genome_lengths)
    return np.where(short, np.minimum(lengths, min_length - 1), lengths)


def _tile(
    sample: np.ndarray,
    genome: np.ndarray,
    length: np.ndarray,
    genome_length: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Start positions: one sample's contigs of one genome lie side by side.

    An assembly does not repeat a region, so within a (sample, genome) group the
    contigs follow each other around the circular genome from a random offset, with
    unassembled stretches between them; only a group longer than the genome wraps
    around and overlaps itself. Contigs of different samples overlap freely.
    """
    order = np.lexsort((genome, sample))
    spacer = rng.integers(50, 1500, size=len(length))
    step = (length + spacer)[order]
    group = sample[order] * (int(genome.max()) + 1) + genome[order]
    first = np.r_[True, group[1:] != group[:-1]]
    offset = (rng.random(len(length)) * genome_length[order]).astype(np.int64)
    csum = np.cumsum(step)
    # Cumulative step within each group: subtract the total before the group's first row.
    group_base = np.maximum.accumulate(np.where(first, csum - step, 0))
    group_offset = offset[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    start = np.empty(len(length), dtype=np.int64)
    start[order] = (group_offset + csum - step - group_base) % genome_length[order]
    return start


def sample_contigs(
    genome_lengths: np.ndarray,
    *,
    n_contigs: int,
    n_samples: int,
    rng: np.random.Generator,
    presence: float = 0.75,
    min_length: int = 2000,
    short_fraction: float = 0.10,
    length_median: float = 3500.0,
    length_sigma: float = 1.0,
    gap_fraction: float = 0.02,
) -> Contigs:
    n_genomes = len(genome_lengths)
    gdepth = genome_depths(n_genomes, n_samples, presence=presence, rng=rng)
    per_sample = rng.multinomial(n_contigs, rng.dirichlet(np.full(n_samples, 20.0)))
    sample = np.repeat(np.arange(n_samples), per_sample)
    genome = np.empty(n_contigs, dtype=np.int64)
    at = 0
    for s, count in enumerate(per_sample):
        # Abundant and large genomes assemble into more contigs, sub-linearly in depth.
        weight = np.sqrt(gdepth[:, s]) * genome_lengths
        genome[at : at + count] = rng.choice(n_genomes, size=count, p=weight / weight.sum())
        at += count
    glen = genome_lengths[genome]
    length = _lengths(
        n_contigs,
        glen,
        min_length=min_length,
        short_fraction=short_fraction,
        median=length_median,
        sigma=length_sigma,
        rng=rng,
    )
    start = _tile(sample, genome, length, glen, rng)
    reverse = rng.random(n_contigs) < 0.5

    # Scaffolding gaps: a run of 10-100 N in a few contigs.
    gap = np.zeros((n_contigs, 2), dtype=np.int64)
    has_gap = (rng.random(n_contigs) < gap_fraction) & (length > 1000)
    gap_len = rng.integers(10, 101, size=n_contigs)
    gap_start = (rng.random(n_contigs) * (length - gap_len - 200)).astype(np.int64) + 100
    gap[has_gap, 0] = gap_start[has_gap]
    gap[has_gap, 1] = gap_start[has_gap] + gap_len[has_gap]

    # Mapping noise shrinks with contig length (more reads average out).
    noise_sd = 0.05 + 6.0 / np.sqrt(length)
    noise = np.exp(rng.normal(0.0, 1.0, size=(n_contigs, n_samples)) * noise_sd[:, None])
    depth = gdepth[genome] * noise

    counters = np.zeros(n_samples, dtype=np.int64)
    ids = []
    for s in sample:
        counters[s] += 1
        ids.append(f"S{s + 1}C{counters[s]}")
    return Contigs(
        ids=ids,
        sample=sample,
        genome=genome,
        start=start,
        length=length,
        reverse=reverse,
        gap=gap,
        depth=depth,
        genome_depth=gdepth,
    )
