"""``tdstore demo``: the main job end to end on a simulated metagenome.

simulate -> ingest -> import noisy labels and gold -> embed (k-mer teacher, or a
model directory) -> teach (the teacher alone, and the posterior given teacher and label)
-> three students (plain Taxometer; distilled from the label posterior; the same on an
SQL-selected subset of labels the teacher does not contradict) -> evaluate against gold. Every
step reuses what the store already holds, so a second run is quick::

    result = run_demo(Path("demo-output"))
    print(result.table)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdstore.taxonomy import RANKS

NOISY = "mmseqs2"
GOLD = "gold"
CONFIDENT = "confident"
RUN_PLAIN = "plain"
RUN_DISTILLED = "distilled"
RUN_CONFIDENT = "distilled-confident"

CONFIDENT_SQL = """
SELECT l.row
FROM labels l JOIN soft_labels s ON s.row = l.row
WHERE l.label_set = '{labels}' AND s.soft_label_set = '{soft}'
  AND l.taxon_id <> 0
  -- keep labels the teacher does not contradict at genus (or family, if no genus)
  AND coalesce(l.genus = s.genus, l.family = s.family, true)
"""


@dataclass
class DemoConfig:
    workdir: Path
    contigs: int = 20000
    seed: int = 0
    model: str = "kmer:5"
    # One-cycle epochs per student (then the 3-epoch refit); keeps the demo under 3 minutes
    # on 2 cores. Batch 1024: with two threads, batch 256 costs as much per epoch here.
    epochs: int = 10
    batch_size: int = 1024
    teach_epochs: int = 30
    show_progress: bool = True


@dataclass
class DemoResult:
    store: Path
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    metrics: Any = None
    table: str = ""
    plots: Path | None = None
    seconds: float = 0.0


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Run (or resume) every step; ``echo`` receives one line per step and the tables."""
    import tdstore

    start = time.monotonic()
    workdir = Path(config.workdir)
    data = workdir / "data"
    store_path = workdir / "demo.tdstore"
    result = DemoResult(store=store_path, plots=workdir / "plots")
    teacher = (
        "kmer" + config.model.split(":", 1)[1] if config.model.startswith("kmer:") else "teacher"
    )
    soft = f"{teacher}-soft"
    posterior = f"{teacher}-posterior"
    total = 11

    def step(index: int, title: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        if done():
            echo(f"[{index:>2}/{total}] {title}: reused from the store")
            result.steps.append((title, "reused", 0.0))
            return
        echo(f"[{index:>2}/{total}] {title} ...")
        t0 = time.monotonic()
        work()
        seconds = time.monotonic() - t0
        echo(f"        done in {seconds:.1f} s")
        result.steps.append((title, "computed", seconds))

    step(
        1,
        f"simulate a metagenome ({config.contigs:,} contigs, seed {config.seed})",
        lambda: _simulation_matches(data, config),
        lambda: _simulate_afresh(data, store_path, config),
    )
    store = tdstore.init(store_path, exist_ok=True)
    step(
        2,
        "ingest contigs and abundances",
        lambda: store.is_ingested,
        lambda: _ingest(store, data, config),
    )
    store = tdstore.open(store_path)
    step(
        3,
        f"import noisy MMseqs2 labels as '{NOISY}'",
        lambda: NOISY in store.label_sets(),
        lambda: _import(store, NOISY, data / "mmseqs2_lca.tsv", "mmseqs2"),
    )
    step(
        4,
        f"import the gold standard as '{GOLD}'",
        lambda: GOLD in store.label_sets(),
        lambda: _import(store, GOLD, data / "gold.tsv", "taxometer"),
    )
    step(
        5,
        f"embed every contig with the teacher ({config.model})",
        lambda: _embedding_complete(store, teacher),
        lambda: _embed(store, teacher, config),
    )
    step(
        6,
        f"teach: cross-fitted soft labels '{soft}'",
        lambda: _has(store, "tdstore.teacher.soft_labels", soft),
        lambda: _teach(store, teacher, soft, config),
    )
    step(
        7,
        f"teach: label-posterior soft labels '{posterior}' (teacher + noisy label)",
        lambda: _has(store, "tdstore.teacher.soft_labels", posterior),
        lambda: _teach(store, teacher, posterior, config, label_posterior=True),
    )
    step(
        8,
        f"SQL subset '{CONFIDENT}': labels the teacher does not contradict",
        lambda: _has(store, "tdstore.subsets", CONFIDENT),
        lambda: _subset(store, soft),
    )
    runs = [
        (RUN_PLAIN, "train the plain Taxometer student", {}),
        (
            RUN_DISTILLED,
            f"train a student distilled from '{posterior}'",
            {"soft_labels": posterior},
        ),
        (
            RUN_CONFIDENT,
            f"train a distilled student on subset '{CONFIDENT}'",
            {"soft_labels": posterior, "subset": CONFIDENT},
        ),
    ]
    for offset, (name, title, options) in enumerate(runs):
        step(
            9 + offset,
            f"{title} ('{name}')",
            lambda name=name: _has(store, "tdstore.student.runs", name),
            lambda name=name, options=options: _train(store, name, options, config),
        )
    total_runs = [name for name, _, _ in runs]
    result.metrics = _evaluate(store, total_runs, result.plots)
    result.table = format_report(result.metrics, [NOISY, *total_runs])
    result.seconds = time.monotonic() - start
    echo("")
    echo(result.table)
    echo("")
    echo(f"plots and the TSVs behind them: {result.plots}/")
    echo(f"store: {store_path}  (try: tdstore info {store_path}; tdstore runs {store_path})")
    echo(
        f"teacher: {config.model}. For a real foundation-model teacher pass a local "
        "GenomeOcean directory: tdstore demo --model /path/to/GenomeOcean-100M (GPU advised)"
    )
    echo(f"total time {result.seconds:.1f} s")
    return result


def _simulation_matches(data: Path, config: DemoConfig) -> bool:
    summary = data / "simulation.json"
    if not summary.exists():
        return False
    recorded = json.loads(summary.read_text())
    params = recorded.get("parameters", {})
    return params.get("n_contigs") == config.contigs and recorded.get("seed") == config.seed


def _simulate_afresh(data: Path, store_path: Path, config: DemoConfig) -> None:
    """New data: the store (if any) holds other contigs, so it goes first, then simulate.

    Otherwise a demo rerun with other --contigs or --seed would reuse a store built from
    the old data next to the new files.
    """
    from tdstore.atomic import discard
    from tdstore.simulate import simulate

    if store_path.exists():
        discard(store_path)
    simulate(data, n_contigs=config.contigs, seed=config.seed)


def _ingest(store: Any, data: Path, config: DemoConfig) -> None:
    from tdstore.ingest.core import ingest

    ingest(
        store,
        data / "contigs.fna.gz",
        abundance=data / "abundance.tsv",
        show_progress=config.show_progress,
    )


def _import(store: Any, name: str, path: Path, fmt: str) -> None:
    from tdstore.labels import import_labels

    import_labels(store, name, path, format=fmt)


def _has(store: Any, module_name: str, name: str) -> bool:
    import importlib

    return name in importlib.import_module(module_name).list_names(store)


def _embedding_complete(store: Any, name: str) -> bool:
    from tdstore.teacher import embed_store

    if name not in embed_store.list_names(store):
        return False
    return not embed_store.status(store, name)["pending"]


def _embed(store: Any, name: str, config: DemoConfig) -> None:
    from tdstore.teacher.embed_run import embed

    embed(store, config.model, name=name, show_progress=config.show_progress)


def _teach(
    store: Any, teacher: str, soft: str, config: DemoConfig, *, label_posterior: bool = False
) -> None:
    from tdstore.teacher.teach import teach

    teach(
        store,
        embeddings=teacher,
        labels=NOISY,
        name=soft,
        seed=config.seed,
        epochs=config.teach_epochs,
        label_posterior=label_posterior,
        progress=config.show_progress,
    )


def _subset(store: Any, soft: str) -> None:
    from tdstore.subsets import create

    create(store, CONFIDENT, sql=CONFIDENT_SQL.format(labels=NOISY, soft=soft))


def _train(store: Any, name: str, options: dict[str, str], config: DemoConfig) -> None:
    from tdstore.student.fit import FitConfig
    from tdstore.student.train import TrainRequest, train

    request = TrainRequest(
        labels=NOISY,
        name=name,
        fit=FitConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed),
        **options,
    )
    train(store, request, progress=config.show_progress)


def _evaluate(store: Any, runs: list[str], plots: Path) -> Any:
    from tdstore.evaluate import evaluate

    return evaluate(store, gold=GOLD, runs=runs, label_sets=[NOISY], plots=plots)


def format_report(metrics: Any, sources: list[str]) -> str:
    """Per-rank F1 of every source side by side, then species calls on known/novel contigs."""
    rows = metrics.to_pylist()
    source_of = {s: s if s in {r["source"] for r in rows} else f"labels:{s}" for s in sources}

    def pick(source: str, group: str, rank: str) -> dict[str, Any] | None:
        for row in rows:
            if row["source"] == source_of[source] and row["group"] == group and row["rank"] == rank:
                return row
        return None

    header = ["rank", *[f"{s} (labels)" if s == NOISY else s for s in sources]]
    lines = [
        "per-rank F1 against gold (score > 0.8; precision/recall per TaxDistill)",
        _row(header),
    ]
    for rank in RANKS:
        cells = [rank]
        for source in sources:
            row = pick(source, "all", rank)
            cells.append("-" if row is None else f"{row['f1']:.3f}")
        lines.append(_row(cells))
    known = [pick(s, "known", "species") for s in sources]
    novel = [pick(s, "novel", "species") for s in sources]
    if all(known) and all(novel):
        lines.append("")
        lines.append("species calls on contigs of known and of novel species:")
        lines.append(_row(["known F1", *[f"{r['f1']:.3f}" for r in known]]))
        lines.append(
            _row(
                [
                    "novel wrong",
                    *[f"{r['wrong'] / max(r['n_gold'], 1):.3f}" for r in novel],
                ]
            )
        )
        lines.append(
            "(novel wrong = share of contigs of species absent from the reference that got a"
            " confident, necessarily wrong, species call)"
        )
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return f"{cells[0]:<12}" + "".join(f"{c:>22}" for c in cells[1:])
