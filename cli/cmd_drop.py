"""``tdstore drop``: remove label sets, soft labels, embedding sets, runs or subsets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("drop")(drop)


def drop(
    store: Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")],
    kind: Annotated[
        str,
        typer.Argument(help="labels, soft-labels, embeddings, runs or subsets"),
    ],
    names: Annotated[list[str], typer.Argument(help="Names of the objects to remove")],
) -> None:
    """Remove stored objects, each whole (renamed aside, then deleted); refused while written.

    Every name is checked first: one unknown name removes nothing. What still names a
    dropped object (a run trained on dropped soft labels, say) is reported and keeps working.
    """
    import tdstore
    from tdstore.drop import WHAT
    from tdstore.drop import drop as drop_objects

    for dropped in drop_objects(tdstore.open(store), kind, names):
        typer.echo(
            f"dropped {WHAT[kind]} {dropped.name!r} ({dropped.freed_bytes / 2**20:,.1f} MiB freed)"
        )
        for note in dropped.notes:
            typer.echo(f"  note: {note}")
