"""Shared test helpers: run the CLI in-process like a user would."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from typer.testing import CliRunner


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli():
    """Call ``cli("ingest", str(store), "--fasta", ...)``; returns exit code, stdout, stderr."""
    from tdstore.cli.main import app

    runner = CliRunner()

    def invoke(*args: str) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args], prog_name="tdstore")
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke
