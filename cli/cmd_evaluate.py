"""``tdstore evaluate``: runs and label sets against a gold label set, side by side."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    store: StorePath,
    gold: Annotated[str, typer.Option("--gold", help="Gold standard label set.")],
    runs: Annotated[
        list[str] | None, typer.Argument(help="Run name(s) with predictions to evaluate.")
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--labels", help="Label set(s) to evaluate (repeat for several)."),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="A call counts only if its score is > this.")
    ] = 0.8,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Directory for PNG plots (each with its TSV)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per-rank precision, recall and F1 (overall, per sample, known/novel); stores them."""
    import tdstore
    from tdstore.evaluate import novel_species_errors, run_evaluation

    report = run_evaluation(
        tdstore.open(store),
        gold=gold,
        runs=runs or [],
        label_sets=labels or [],
        threshold=threshold,
        plots=plots,
    )
    rows = report.table.to_pylist()
    novel = novel_species_errors(report.table)
    if as_json:
        payload = {
            "gold": gold,
            "threshold": threshold,
            "metrics": [{k: _json_number(k, v) for k, v in row.items()} for row in rows],
            "novel_wrong_species": novel,
            "saved": [str(p) for p in report.saved],
            "plots": [str(p) for p in report.plots],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    sources = [s.name for s in report.evaluation.sources]
    _print_tables(rows, sources, gold, threshold, novel)
    for path in report.plots:
        typer.echo(f"plot: {path}  (numbers: {path.with_suffix('.tsv')})")


def _json_number(key: str, value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    # The threshold is stored as float32: print 0.8, not 0.800000011920929.
    return round(value, 6) if key == "threshold" else value


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _print_tables(
    rows: list[dict[str, Any]],
    sources: list[str],
    gold: str,
    threshold: float,
    novel: dict[str, dict[str, float]],
) -> None:
    from tdstore.taxonomy import RANKS

    cell = {(r["source"], r["group"], r["rank"]): r for r in rows}
    header = ["rank"] + [f"{s} {m}" for s in sources for m in ("P", "R", "F1")]
    body = []
    for rank in RANKS:
        line = [rank]
        for source in sources:
            row = cell[(source, "all", rank)]
            line += [_fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"])]
        body.append(line)
    n = cell[(sources[0], "all", "domain")]["n_contigs"]
    _table(f"gold {gold}: {n} contigs, score > {threshold:g}", header, body)

    counts_header = ["rank"] + [f"{s} correct/wrong/unassigned" for s in sources]
    counts_body = [
        [rank]
        + [
            "{correct}/{wrong}/{unassigned}".format(**cell[(source, "all", rank)])
            for source in sources
        ]
        for rank in RANKS
    ]
    _table("counts", counts_header, counts_body)

    samples = sorted({r["group"] for r in rows if r["group"].startswith("sample:")})
    if len(samples) > 1:
        sample_header = ["sample", "contigs"] + [f"{s} F1 genus/species" for s in sources]
        sample_body = [
            [group[len("sample:") :], str(cell[(sources[0], group, "domain")]["n_contigs"])]
            + [
                f"{_fmt(cell[(s, group, 'genus')]['f1'])}/{_fmt(cell[(s, group, 'species')]['f1'])}"
                for s in sources
            ]
            for group in samples
        ]
        _table("per sample", sample_header, sample_body)

    if novel:
        novel_header = [
            "source",
            "known species F1",
            "novel genus F1",
            "wrong species calls / novel contigs",
        ]
        novel_body = []
        for source in sources:
            known = cell.get((source, "known", "species"))
            genus = cell.get((source, "novel", "genus"))
            wrong = novel.get(source)
            novel_body.append(
                [
                    source,
                    _fmt(known["f1"]) if known else "-",
                    _fmt(genus["f1"]) if genus else "-",
                    f"{wrong['wrong_species']}/{wrong['novel_contigs']} = {_fmt(wrong['rate'])}"
                    if wrong
                    else "-",
                ]
            )
        _table("known / novel species (gold marks novel species)", novel_header, novel_body)


def _table(title: str, header: list[str], body: list[list[str]]) -> None:
    """A rich table on a terminal; tab-separated text (one '# title' line) otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for line in body:
            table.add_row(*line)
        Console().print(table)
        return
    typer.echo(f"# {title}")
    typer.echo("\t".join(header))
    for line in body:
        typer.echo("\t".join(line))
    typer.echo("")
