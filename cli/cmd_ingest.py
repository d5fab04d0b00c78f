"""``tdstore ingest``: read contigs (and abundances) into a store, creating it if needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    store: Annotated[Path, typer.Argument(help="Store directory; created if it does not exist.")],
    fasta: Annotated[
        Path,
        typer.Option(
            "--fasta", help="Contigs FASTA, plain or gzip (header up to the first space = id)."
        ),
    ],
    abundance: Annotated[
        Path | None,
        typer.Option(
            "--abundance", help="vamb abundance TSV: 'contigname' + one column per sample."
        ),
    ] = None,
    min_length: Annotated[
        int,
        typer.Option("--min-length", help="Contigs shorter than this are recorded as filtered."),
    ] = 2000,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help="Sample name for every contig (default: from vamb-style S{n}C{m} ids, else none).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the contigs of an ingested store (only while it holds nothing else).",
        ),
    ] = False,
) -> None:
    """Ingest contigs: lengths, GC, sequences, TNF and abundances, published atomically."""
    from tdstore.info import samples_line
    from tdstore.ingest.core import ingest as run_ingest

    path = Path(store)
    summary = run_ingest(
        path,
        fasta,
        abundance=abundance,
        min_length=min_length,
        sample=sample,
        overwrite=overwrite,
    )
    typer.echo(
        f"ingested {summary['contigs']:,} contigs ({summary['bases'] / 1e6:,.1f} Mbp) into {path}; "
        f"{summary['filtered']:,} shorter than {summary['min_length']} bp recorded as filtered"
    )
    typer.echo(f"samples: {samples_line(summary['samples'], summary['contig_samples'])}")
    rows = summary["abundance_rows"]
    if rows["rows_unknown_contig"] or rows["rows_filtered_contig"]:
        typer.echo(
            f"abundance: {rows['rows_unknown_contig']:,} rows for contigs not in the FASTA"
            f"{' (e.g. ' + ', '.join(rows['unknown_examples']) + ')' if rows['unknown_examples'] else ''}, "
            f"{rows['rows_filtered_contig']:,} rows for filtered contigs (ignored)"
        )
    typer.echo(f"refhash {summary['refhash'][:16]}  ({summary['seconds']:.1f} s)")
