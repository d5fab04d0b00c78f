"""A synthetic metagenome with a known truth, for tests, the demo and benchmarks.

A 7-rank tree, genomes evolved down it (sequence and composition carry the tree),
several samples with per-genome abundances, contigs as genome fragments, and noisy
MMseqs2-like labels from a reference that lacks a share of the species::

    from tdstore.simulate import simulate
    result = simulate("sim", n_contigs=20000, seed=0)  # paths and counts
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdstore import __version__
from tdstore.atomic import write_json_atomic
from tdstore.errors import UsageError
from tdstore.simulate.genomes import evolve_genomes
from tdstore.simulate.labels import (
    LabelNoise,
    choose_novel,
    label_outcomes,
    label_quality,
    noisy_labels,
)
from tdstore.simulate.sampling import sample_contigs
from tdstore.simulate.tree import build_tree, default_species_count
from tdstore.simulate.writers import (
    write_abundance,
    write_cami_binning,
    write_fasta,
    write_kraken2,
    write_metabuli,
    write_mmseqs2,
    write_taxdump,
    write_taxometer,
)

__all__ = ["LabelNoise", "simulate", "FILES"]

FILES = {
    "fasta": "contigs.fna.gz",
    "abundance": "abundance.tsv",
    "mmseqs2": "mmseqs2_lca.tsv",
    "kraken2": "contigs.kraken2",
    "metabuli": "metabuli_classifications.tsv",
    "labels": "labels.tsv",
    "gold": "gold.tsv",
    "binning": "gold.binning",
    "taxdump": "taxdump",
    "summary": "simulation.json",
}


def simulate(
    outdir: Path | str,
    *,
    n_contigs: int = 20000,
    seed: int = 0,
    n_samples: int = 4,
    n_species: int | None = None,
    novel_fraction: float = 0.25,
    noise: LabelNoise | None = None,
    min_length: int = 2000,
    short_fraction: float = 0.10,
    genome_min: int = 100_000,
    genome_max: int = 500_000,
    compresslevel: int = 1,
) -> dict[str, Any]:
    """Write a synthetic metagenome into ``outdir``; returns output paths and counts.

    Deterministic: the same arguments give byte-identical files. Independent random
    streams drive the tree, genomes, contigs, novel species and labels, so changing a
    label-noise rate leaves the sequences as they were.
    """
    noise = noise or LabelNoise()
    n_species = n_species or default_species_count(n_contigs)
    _validate(n_contigs, n_samples, n_species, novel_fraction, min_length, genome_min, genome_max)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # The summary marks a finished simulation: drop an old one before rewriting the rest.
    (outdir / FILES["summary"]).unlink(missing_ok=True)
    tree_rng, genome_rng, contig_rng, novel_rng, label_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )

    tree = build_tree(n_species, rng=tree_rng)
    genome_lengths = np.exp(
        genome_rng.uniform(np.log(genome_min), np.log(genome_max), size=n_species)
    ).astype(np.int64)
    genomes = evolve_genomes(tree, genome_lengths, rng=genome_rng)
    contigs = sample_contigs(
        genome_lengths,
        n_contigs=n_contigs,
        n_samples=n_samples,
        rng=contig_rng,
        min_length=min_length,
        short_fraction=short_fraction,
    )
    novel = choose_novel(tree, novel_fraction, novel_rng)
    labels = noisy_labels(tree, contigs.genome, contigs.length, novel, noise, label_rng)

    samples = [f"S{i + 1}" for i in range(n_samples)]
    genome_ids = [f"G{i + 1:04d}" for i in range(n_species)]
    paths = {key: outdir / name for key, name in FILES.items()}
    bases = write_fasta(paths["fasta"], genomes, contigs, compresslevel=compresslevel)
    write_abundance(paths["abundance"], contigs, samples)
    write_mmseqs2(paths["mmseqs2"], contigs.ids, labels, tree)
    write_kraken2(paths["kraken2"], contigs.ids, contigs.length, labels, tree)
    write_metabuli(paths["metabuli"], contigs.ids, contigs.length, labels, tree)
    write_taxometer(paths["labels"], contigs.ids, labels, tree)
    gold_nodes = tree.species[contigs.genome]
    write_taxometer(paths["gold"], contigs.ids, gold_nodes, tree, novel=novel[contigs.genome])
    write_cami_binning(paths["binning"], contigs, genome_ids, tree, sample_id="tdstore-sim")
    write_taxdump(paths["taxdump"], tree)

    kept = contigs.length >= min_length
    has_contigs = np.bincount(contigs.genome, minlength=n_species) > 0
    counts = {
        "contigs": n_contigs,
        "kept": int(kept.sum()),
        "filtered": int((~kept).sum()),
        "bases": bases,
        "samples": n_samples,
        "species": n_species,
        "novel_species": int(novel.sum()),
        "species_with_contigs": int(has_contigs.sum()),
        "novel_species_with_contigs": int((has_contigs & novel).sum()),
        "novel_contigs": int(novel[contigs.genome].sum()),
        "taxa": tree.n_nodes - 1,
    }
    summary = {
        "tdstore_version": __version__,
        "seed": seed,
        "parameters": {
            "n_contigs": n_contigs,
            "n_samples": n_samples,
            "n_species": n_species,
            "novel_fraction": novel_fraction,
            "min_length": min_length,
            "short_fraction": short_fraction,
            "genome_min": genome_min,
            "genome_max": genome_max,
            "compresslevel": compresslevel,
            "label_noise": noise.as_dict(),
        },
        "counts": counts,
        "label_quality_scope": f"contigs >= {min_length} bp; per contig; TaxDistill definitions",
        "label_quality": label_quality(tree, contigs.genome[kept], labels[kept], novel),
        "label_outcomes": label_outcomes(tree, contigs.genome[kept], labels[kept], novel),
        "files": dict(FILES),
        "samples": samples,
    }
    # Written last: its presence says the whole simulation finished.
    write_json_atomic(paths["summary"], summary)
    return {**{f"{k}_path": v for k, v in paths.items()}, **counts, "summary": summary}


def _validate(
    n_contigs: int,
    n_samples: int,
    n_species: int,
    novel_fraction: float,
    min_length: int,
    genome_min: int,
    genome_max: int,
) -> None:
    if n_contigs < 1:
        raise UsageError(f"--contigs must be at least 1, got {n_contigs}")
    if n_samples < 1:
        raise UsageError(f"--samples must be at least 1, got {n_samples}")
    if n_species < 2:
        raise UsageError(f"--species must be at least 2, got {n_species}")
    if not 0.0 <= novel_fraction < 1.0:
        raise UsageError(f"--novel-fraction must be in [0, 1), got {novel_fraction}")
    if min_length < 600:
        raise UsageError(f"--min-length must be at least 600, got {min_length}")
    if not min_length * 4 <= genome_min <= genome_max:
        raise UsageError(
            f"genome sizes must satisfy 4 x min_length <= min <= max, got {genome_min}-{genome_max}"
        )
