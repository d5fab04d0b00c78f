"""``tdstore sql`` (read-only DuckDB over the store) and ``tdstore subset`` (saved row sets)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]
SubsetName = Annotated[str, typer.Argument(help="Subset name (letters, digits, '.', '_', '-')")]
_TABLE_ROWS = 40

_VIEWS_HELP = (
    "Views: contigs, taxonomy, lineages, labels, soft_labels, embeddings, runs, metrics, "
    "predictions, subsets, subset_rows. labels, soft_labels and predictions carry taxon_rank, "
    'taxon_name and one column per rank (domain, phylum, class, "order", family, genus, '
    "species). Macros: rank_name(taxon_id, 'family'), rank_depth('genus'). Read-only: COPY, "
    "ATTACH, SET and file functions outside the store are refused."
)

subset_app = typer.Typer(
    help="Saved subsets: the rows a student trains on, with the SQL that chose them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("sql", help=f"Run a read-only SQL query over the store. {_VIEWS_HELP}")(sql)
    app.add_typer(subset_app, name="subset")


def sql(
    store: StorePath,
    query: Annotated[str, typer.Argument(help='DuckDB SQL, e.g. "SELECT * FROM runs"')],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="table (terminal), csv, tsv, json (one object per line) or parquet; "
            "default: from --output's suffix, else table",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result to this file")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help=f"At most this many rows (table format default: {_TABLE_ROWS})", min=0),
    ] = None,
) -> None:
    import tdstore
    from tdstore import sql as tsql

    chosen = tsql.format_for(output, fmt)
    cap = limit if limit is not None else (_TABLE_ROWS if chosen == "table" else None)
    # One more row than shown tells the table view whether rows were left out.
    fetch = cap + 1 if chosen == "table" and cap is not None else cap
    tsql.check_read_only(query)  # before connecting: a refused query builds no cache
    opened = tdstore.open(store)
    if output is not None:
        from tdstore.outputs import check_output_file

        # Before the query runs (it may take a while); a path inside the store is refused.
        check_output_file(output, option="--output", store=opened)
    con = tsql.connect(opened, calls=tsql.calls_mode(query))
    try:
        table = tsql.execute(con, query, limit=fetch)
    finally:
        con.close()
    if output is not None:
        tsql.write_output(table, chosen, output, store=opened)
        typer.echo(f"wrote {table.num_rows:,} rows to {output}", err=True)
    elif chosen == "table":
        _print_table(table, cap)
    else:
        typer.echo(tsql.render(table, chosen).decode(), nl=False)


def _print_table(table, cap: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = table.slice(0, cap) if cap is not None else table
    view = Table(show_lines=False)
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for record in shown.to_pylist():
        view.add_row(*("NULL" if v is None else _cell(v) for v in record.values()))
    # Piped output is not wrapped to 80 columns: the table takes the width it needs.
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 1000)
    console.print(view)
    if cap is not None and table.num_rows > cap:
        typer.echo(f"... more rows (showing {cap}; use --limit N, or --format csv for all)")
    else:
        typer.echo(f"{shown.num_rows:,} row(s)")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@subset_app.command("create")
def subset_create(
    store: StorePath,
    name: SubsetName,
    where: Annotated[
        str | None,
        typer.Option(
            help="SQL expression over subset_source: row, contig_id, sample, length, gc, n_count "
            "of kept contigs, plus with --labels the label columns taxon_id, novel, taxon_rank, "
            'taxon_name, domain, phylum, class, "order", family, genus, species',
        ),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--sql", help="A SELECT returning a column row or contig_id"),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Label set whose columns --where sees")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing subset")] = False,
    allow_empty: Annotated[bool, typer.Option(help="Save a subset even if it has no rows")] = False,
) -> None:
    """Save the rows selected by --where or --sql as a named subset."""
    import tdstore
    from tdstore import subsets

    result = subsets.create(
        tdstore.open(store),
        name,
        where=where,
        sql=query,
        labels=labels,
        overwrite=overwrite,
        allow_empty=allow_empty,
    )
    extra = (
        f", {result['filtered_dropped']} filtered contig(s) dropped"
        if result["filtered_dropped"]
        else ""
    )
    typer.echo(
        f"subset {name}: {result['n_rows']:,} rows, sql_hash {result['sql_hash'][:12]}{extra}"
    )


@subset_app.command("list")
def subset_list(store: StorePath) -> None:
    """List subsets: rows, creation time, and whether they match the store's content."""
    import tdstore
    from tdstore import subsets

    opened = tdstore.open(store)
    names = subsets.list_names(opened)
    if not names:
        typer.echo("no subsets")
    for name in names:
        d = subsets.describe(opened, name)
        state = "" if d["current"] else "  STALE (other store content)"
        typer.echo(f"{name:<24} {d['rows']:>12,} rows  {d['created']}  {d['query']}{state}")


@subset_app.command("show")
def subset_show(store: StorePath, name: SubsetName) -> None:
    """Show a subset's SQL, hash, refhash and row count."""
    import tdstore
    from tdstore import subsets

    info = subsets.show(tdstore.open(store), name)
    for key in ("name", "n_rows", "created", "sql_hash", "refhash", "current", "labels", "where"):
        if info.get(key) is not None:
            typer.echo(f"{key:<10} {info[key]}")
    if info.get("filtered_dropped"):
        typer.echo(f"{'dropped':<10} {info['filtered_dropped']} filtered contig(s)")
    typer.echo(f"sql\n{info.get('sql')}")


@subset_app.command("drop")
def subset_drop(store: StorePath, name: SubsetName) -> None:
    """Delete a subset."""
    import tdstore
    from tdstore import subsets

    subsets.drop(tdstore.open(store), name)
    typer.echo(f"dropped subset {name}")
