"""``tdstore simulate``: write a synthetic metagenome with a gold standard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def simulate(
    outdir: Annotated[Path, typer.Argument(help="Output directory (created if missing).")],
    contigs: Annotated[
        int, typer.Option("--contigs", help="Number of contigs, including ~10% below 2 kbp.")
    ] = 20000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same bytes.")] = 0,
    samples: Annotated[int, typer.Option("--samples", help="Number of samples S1..SK.")] = 4,
    species: Annotated[
        int | None,
        typer.Option(
            "--species",
            help="Number of species (default: about 200 for 20k contigs, growing mildly).",
        ),
    ] = None,
    novel_fraction: Annotated[
        float,
        typer.Option("--novel-fraction", help="Share of species absent from the reference."),
    ] = 0.25,
    novel_wrong: Annotated[
        float,
        typer.Option(
            "--novel-wrong", help="Share of novel-species contigs called as a known relative."
        ),
    ] = 0.35,
    known_wrong: Annotated[
        float,
        typer.Option("--known-wrong", help="Share of known-species contigs called as a sibling."),
    ] = 0.04,
    known_truncated: Annotated[
        float,
        typer.Option(
            "--known-truncated",
            help="Share of known-species contigs truncated above species (more if short).",
        ),
    ] = 0.05,
    min_length: Annotated[
        int, typer.Option("--min-length", help="Length filter the contig lengths are built around.")
    ] = 2000,
) -> None:
    """Write a synthetic metagenome: contigs, abundances, noisy MMseqs2-like labels, gold."""
    import dataclasses

    from tdstore.simulate import LabelNoise
    from tdstore.simulate import simulate as run

    noise = dataclasses.replace(
        LabelNoise(),
        novel_wrong=novel_wrong,
        known_wrong=known_wrong,
        known_truncated=known_truncated,
    )
    result = run(
        outdir,
        n_contigs=contigs,
        seed=seed,
        n_samples=samples,
        n_species=species,
        novel_fraction=novel_fraction,
        noise=noise,
        min_length=min_length,
    )
    quality = result["summary"]["label_quality"]["species"]
    typer.echo(
        f"wrote {outdir}: {result['contigs']:,} contigs ({result['filtered']:,} below"
        f" {min_length} bp), {result['bases'] / 1e6:,.1f} Mbp, {samples} samples"
    )
    typer.echo(
        f"species    {result['species']} ({result['novel_species']} novel: absent from the"
        f" reference, {result['novel_contigs']:,} contigs)"
    )
    for group in ("all", "known", "novel"):
        q = quality[group]
        typer.echo(
            f"labels     species {group:<5} precision {q['precision']:.3f}"
            f"  recall {q['recall']:.3f}  F1 {q['f1']:.3f}  ({q['contigs']:,} contigs)"
        )
    for key in (
        "fasta", "abundance", "mmseqs2", "kraken2", "metabuli", "labels", "gold", "binning",
        "taxdump",
    ):  # fmt: skip
        typer.echo(f"  {result[f'{key}_path']}")
