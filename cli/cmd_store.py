"""``tdstore init``, ``tdstore info`` and ``tdstore check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("info")(info)
    app.command("check")(check)


def init(store: StorePath) -> None:
    """Create an empty store directory."""
    import tdstore

    created = tdstore.init(store)
    typer.echo(f"created store {created.path}")


def info(
    store: StorePath,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Counts, samples, size on disk, label sets, embeddings, soft labels, subsets and runs."""
    import tdstore
    from tdstore.info import samples_line, store_info

    summary = store_info(tdstore.open(store))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(f"store      {summary['path']}  (tdstore {summary['tdstore_version']})")
    if not summary["ingested"]:
        typer.echo("contigs    none yet: run `tdstore ingest`")
        return
    typer.echo(
        f"contigs    {summary['contigs']:,} kept, {summary['filtered']:,} below {summary['min_length']} bp,"
        f" {summary['bases'] / 1e6:,.1f} Mbp kept"
    )
    typer.echo(f"samples    {samples_line(summary['samples'], summary['contig_samples'])}")
    typer.echo(f"size       {summary['size_bytes'] / 2**20:,.1f} MiB")
    typer.echo(f"refhash    {summary['refhash'][:16]}")
    for kind in ("label_sets", "embeddings", "soft_labels", "subsets", "runs"):
        objects = summary[kind]
        typer.echo(f"{kind.replace('_', ' '):<10} {len(objects)}")
        for name, detail in objects.items():
            typer.echo(f"  {name:<24} {_one_line(detail)}")


def _one_line(detail: dict) -> str:
    """Scalars as key=value; a label set's counts reduced to what users compare."""
    parts = []
    for key, value in detail.items():
        if key in {"source", "imported_at", "created"} or value is None:
            continue
        if key == "counts" and isinstance(value, dict):
            species = (value.get("classified_at") or {}).get("species")
            value = (
                f"matched={value.get('matched')} unclassified={value.get('unclassified')}"
                f" to-species={species}"
            )
            parts.append(value)
            continue
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}={value}")
    return "  ".join(parts)


def check(
    store: StorePath,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also re-hash sequences and embedding shards.")
    ] = False,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Delete leftovers of killed commands (*.tmp-*); refused while a command writes.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"ok", "problems", "notes", "exit_code"} as JSON; the exit code is kept.',
        ),
    ] = False,
) -> None:
    """Check schemas, refhash, array shapes and that every published object is complete."""
    import tdstore
    from tdstore.check import check_store, leftovers, remove_leftovers
    from tdstore.errors import IncompleteError, SchemaError, TdstoreError, UnfinishedProblem

    handle = tdstore.open(store)
    found = remove_leftovers(handle) if clean else leftovers(handle)
    what = "removed" if clean else "leftover of a killed or running command (--clean removes)"
    notes = [f"{what}: {path.relative_to(handle.path)}" for path in found]
    problems = check_store(handle, deep=deep)
    verdict: TdstoreError | None = None
    if problems and all(isinstance(problem, UnfinishedProblem) for problem in problems):
        verdict = IncompleteError(f"{store}: {len(problems)} unfinished object(s); resume them")
    elif problems:
        verdict = SchemaError(f"{store}: {len(problems)} problem(s) found")
    if as_json:
        report = {
            "store": str(handle.path),
            "ok": not problems,
            "problems": [str(problem) for problem in problems],
            "notes": notes,
            "exit_code": verdict.exit_code if verdict else 0,
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        for problem in problems:
            typer.echo(f"problem: {problem}", err=True)
    if verdict is not None:
        raise verdict
    if not as_json:
        typer.echo(f"{store}: ok")
