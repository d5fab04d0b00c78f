"""``tdstore migrate``: upgrade a store written by an older tdstore to the current schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


def migrate(
    store: Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be upgraded; change nothing.")
    ] = False,
    inventory: Annotated[
        bool, typer.Option("--inventory", help="List every stored object's schema and version.")
    ] = False,
) -> None:
    """Upgrade every stored object to this tdstore's schema versions (all checked first)."""
    import tdstore
    from tdstore import migrate as mig
    from tdstore.errors import SchemaError

    handle = tdstore.open(store)
    found = mig.inventory(handle)
    if inventory:
        for item in found:
            typer.echo(
                f"{str(item.path.relative_to(handle.path)):<48} {item.schema:<28} "
                f"v{item.version} ({item.state})"
            )
    # All of them, as `tdstore check` lists its problems, and the same exit code (5).
    blocked = mig.problems(handle)
    if blocked:
        for problem in blocked:
            typer.echo(f"problem: {problem}", err=True)
        raise SchemaError(
            f"{store}: {len(blocked)} object(s) cannot be migrated; nothing was changed"
        )
    lines = mig.migrate(handle, dry_run=dry_run)
    for line in lines:
        typer.echo(("would migrate " if dry_run else "migrated ") + line)
    if not lines:
        typer.echo(f"{store}: {len(found)} objects, all at the current schema versions")
