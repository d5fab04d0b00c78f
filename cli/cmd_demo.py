"""``tdstore demo``: the main job on a simulated metagenome (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where the simulated data, store and plots go.")
    ] = Path("demo-output"),
    contigs: Annotated[int, typer.Option("--contigs", help="Contigs to simulate.")] = 20000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulation and training.")] = 0,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Teacher: kmer:K (no GPU) or a local GenomeOcean / HF model directory.",
        ),
    ] = "kmer:5",
    epochs: Annotated[
        int,
        typer.Option(
            "--epochs",
            help="Epochs per student (one-cycle, then a 3-epoch refit on every label).",
        ),
    ] = 10,
) -> None:
    """Simulate, ingest, label, embed, teach, train three students and evaluate them."""
    from tdstore.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(workdir=workdir, contigs=contigs, seed=seed, model=model, epochs=epochs),
        echo=typer.echo,
    )
