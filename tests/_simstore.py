"""A small simulated metagenome, ingested into a store: what the label, export and drop
tests start from (real files, real ingest; a few seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tdstore
from tdstore.store import Store


def simulated_store(
    root: Path, *, seed: int, n_contigs: int = 300, n_species: int = 6
) -> tuple[Store, dict[str, Any]]:
    """(the store, the simulator's result: ``fasta_path``, ``taxdump_path``, ...)."""
    from tdstore.ingest.core import ingest
    from tdstore.simulate import simulate

    sim = simulate(
        root / "sim",
        n_contigs=n_contigs,
        seed=seed,
        n_species=n_species,
        genome_min=20_000,
        genome_max=40_000,
    )
    store = tdstore.init(root / "s.tdstore")
    ingest(store, sim["fasta_path"], abundance=sim["abundance_path"], show_progress=False)
    return tdstore.open(store.path), sim
