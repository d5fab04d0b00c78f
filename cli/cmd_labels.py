"""``tdstore labels import|list|show``: label sets of a store (noisy labels, gold standards)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]
NameArg = Annotated[str, typer.Argument(help="Label set name, e.g. mmseqs or gold")]

labels_app = typer.Typer(
    help="Import label files (Taxometer TSV, MMseqs2, Kraken2, Metabuli, CAMI gold standard) "
    "and inspect label sets.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(labels_app, name="labels")


def _examples(ids: list[str]) -> str:
    return f" (e.g. {', '.join(ids)})" if ids else ""


@labels_app.command("import")
def import_(
    store: StorePath,
    name: NameArg,
    file: Annotated[Path, typer.Argument(help="Label file (plain or gzip)")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="taxometer (contigs/predictions TSV), mmseqs2 (taxonomy --tax-lineage 1 "
            "output), cami (binning gold standard; needs --taxdump), kraken2 (--output "
            "file; needs --taxdump), metabuli (classifications.tsv; --taxdump unless "
            "classified with --lineage 1) or taxometer-output (Taxometer's results TSV, "
            "to evaluate it)",
        ),
    ],
    taxdump: Annotated[
        Path | None,
        typer.Option(
            help="Taxdump directory (nodes.dmp, names.dmp) that resolves taxids: NCBI's for "
            "cami, the database's taxonomy/ for kraken2 and metabuli"
        ),
    ] = None,
    tool: Annotated[
        str | None, typer.Option(help="Tool that made the labels (recorded as provenance)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a label set of the same name")] = False,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="taxometer-output: stop each lineage before its first score <= this "
            "(0.8 is TaxDistill's rule, as `evaluate` applies to runs)"
        ),
    ] = None,
) -> None:
    """Import a label file as label set NAME."""
    import tdstore
    from tdstore.labels import import_labels

    s = import_labels(
        tdstore.open(store),
        name,
        file,
        format=format,
        taxdump=taxdump,
        overwrite=overwrite,
        min_score=min_score,
        tool=tool,
    )
    typer.echo(f"imported label set {name!r} ({format}) from {s['source']}")
    typer.echo(
        f"  rows {s['rows']:,}: matched {s['matched']:,}, "
        f"unknown {s['unknown']:,}{_examples(s['unknown_examples'])}, "
        f"filtered {s['filtered']:,} (below the length filter)"
    )
    ranks = ", ".join(f"{rank} {n:,}" for rank, n in s["classified_at"].items())
    typer.echo(f"  unclassified {s['unclassified']:,}; labelled to at least: {ranks}")
    if s["novel"] is not None:
        typer.echo(f"  novel {s['novel']:,}")
    typer.echo(f"  taxa added to the store's taxonomy: {s['taxa_added']:,}")
    if s.get("homonyms"):
        typer.echo(
            f"note: {s['homonyms']:,} {'taxon shares' if s['homonyms'] == 1 else 'taxa share'} "
            "a name with another taxon of the store and "
            f"{'was' if s['homonyms'] == 1 else 'were'} named after the parent, e.g. "
            f"{', '.join(s['homonym_examples'][:2])}",
            err=True,
        )


@labels_app.command("list")
def list_(store: StorePath) -> None:
    """List the label sets of a store with their format, counts and source."""
    import tdstore
    from tdstore.labels import describe, list_names

    opened = tdstore.open(store)
    names = list_names(opened)
    if not names:
        typer.echo("no label sets; import one with `tdstore labels import`")
        return
    described = [(name, describe(opened, name)) for name in names]
    # Names and formats as wide as the widest (taxometer-output is 16 characters).
    nw = max(16, *(len(name) for name in names))
    fw = max(10, *(len(d["format"] or "?") for _, d in described))
    typer.echo(
        f"{'name':<{nw}} {'format':<{fw}} {'matched':>9} {'unknown':>8} {'filtered':>8} "
        f"{'unclass.':>8} {'species':>8}  source"
    )
    for name, d in described:
        c = d["counts"]
        typer.echo(
            f"{name:<{nw}} {d['format'] or '?':<{fw}} {c.get('matched', 0):>9,} "
            f"{c.get('unknown', 0):>8,} {c.get('filtered', 0):>8,} "
            f"{c.get('unclassified', 0):>8,} {c.get('classified_at', {}).get('species', 0):>8,}"
            f"  {d['source']}"
        )


@labels_app.command("show")
def show(
    store: StorePath,
    name: NameArg,
    limit: Annotated[int, typer.Option(help="Rows to show (0: all)")] = 10,
) -> None:
    """Show the first labels of a set: contig id and lineage."""
    import tdstore
    from tdstore.labels import lineage_text

    opened = tdstore.open(store)
    table, _ = opened.labels(name)
    taxonomy = opened.taxonomy()
    if limit > 0:
        table = table.slice(0, limit)
    novel = table.column("novel").to_pylist()
    for contig_id, taxon_id, flag in zip(
        table.column("contig_id").to_pylist(),
        table.column("taxon_id").to_pylist(),
        novel,
        strict=True,
    ):
        lineage = lineage_text(taxonomy, taxon_id) or "unclassified"
        mark = "\tnovel" if flag else ""
        typer.echo(f"{contig_id}\t{lineage}{mark}")
