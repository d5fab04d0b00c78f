"""Entry point of the ``tdstore`` command.

Each ``cmd_*.py`` module in this package registers its commands on the app; they
parse options, call the library and report. Heavy imports (torch, transformers,
duckdb, zarr) happen inside command functions so ``tdstore --help`` stays fast.
Errors: every :class:`tdstore.errors.TdstoreError` becomes one line on stderr and
its documented exit code (``tdstore exit-codes`` lists them).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click
import typer

# typer >= 0.25 parses with its own copy of click; its usage errors are these classes.
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup
from typer.exceptions import Abort

from tdstore import __version__
from tdstore.errors import EXIT_CODES, TdstoreError


class _Group(TyperGroup):
    """Turns library errors into one line on stderr and their documented exit code.

    Usage errors too (a missing option, a value of the wrong type): click would draw a
    boxed, multi-line message; a SLURM log or a pipeline's stderr reads one line better.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except Abort:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        # With standalone_mode=False click returns ctx.exit()'s code (or the command's None).
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TdstoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            typer.echo(
                "interrupted: finished work is kept; run the same command again to resume", err=True
            )
            ctx.exit(130)
        return None


app = typer.Typer(
    cls=_Group,
    name="tdstore",
    help="Taxonomic annotation of metagenomic contigs by knowledge distillation, from a store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tdstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """tdstore: one teacher pass per metagenome, many cheap students."""


def exit_codes() -> None:
    """List the exit codes tdstore uses."""
    for code, meaning in EXIT_CODES.items():
        typer.echo(f"{code:>4}  {meaning}")


# Workflow order for `tdstore --help`; any other cmd_*.py module is listed after these.
COMMAND_ORDER = (
    "cmd_store",
    "cmd_simulate",
    "cmd_ingest",
    "cmd_labels",
    "cmd_embed",
    "cmd_teach",
    "cmd_sql",
    "cmd_train",
    "cmd_evaluate",
    "cmd_drop",
    "cmd_demo",
    "cmd_migrate",
)


def _register_commands() -> None:
    package = importlib.import_module("tdstore.cli")
    found = {m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("cmd_")}
    ordered = [m for m in COMMAND_ORDER if m in found] + sorted(found - set(COMMAND_ORDER))
    for module in ordered:
        importlib.import_module(f"tdstore.cli.{module}").register(app)


_register_commands()
app.command("exit-codes")(exit_codes)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (used by tests and ``run``)."""
    try:
        app(args=argv, prog_name="tdstore")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def run() -> None:
    app(prog_name="tdstore")


if __name__ == "__main__":
    run()
