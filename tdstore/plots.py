"""Evaluation plots, each a PNG with the TSV of the numbers behind it (same basename).

matplotlib is imported inside the drawing functions and used through the Agg canvas
(no pyplot, no display, no global state)::

    paths = write_plots(load_evaluation(store, gold="truth", runs=["kd"]), Path("plots"))
    # plots/f1_by_rank.png, plots/f1_by_rank.tsv, plots/threshold_sweep.png, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdstore.atomic import atomic_path, write_bytes_atomic
from tdstore.evaluate import (
    RANKS,
    SWEEP_THRESHOLDS,
    Evaluation,
    grouped_counts,
    rates,
    reliability,
    threshold_sweep,
)

SWEEP_RANKS = ("species", "genus")


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{float(value):.6g}"
    return str(value)


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(_cell(v) for v in row) for row in rows]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _ordered(evaluation: Evaluation) -> list[Any]:
    # Label sets first: they are the baseline the runs are compared against.
    return sorted(evaluation.sources, key=lambda s: s.kind != "labels")


def f1_by_rank(evaluation: Evaluation, out_dir: Path, threshold: float) -> Path:
    from matplotlib.figure import Figure

    sources = _ordered(evaluation)
    rows = []
    f1s = []
    for source in sources:
        counts = grouped_counts(source.rank_ids, source.scores, evaluation.gold_ids, threshold)
        p, r, f1 = rates(counts["correct"][0], counts["wrong"][0], counts["n_gold"][0])
        f1s.append(f1)
        for i, rank in enumerate(RANKS):
            rows.append(
                [source.name, rank, threshold, counts["n_gold"][0, i], counts["correct"][0, i],
                 counts["wrong"][0, i], counts["unassigned"][0, i], p[i], r[i], f1[i]]
            )  # fmt: skip
    header = ["source", "rank", "threshold", "n_gold", "correct", "wrong", "unassigned",
              "precision", "recall", "f1"]  # fmt: skip
    write_tsv(out_dir / "f1_by_rank.tsv", header, rows)

    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(sources), 1)
    x = np.arange(len(RANKS))
    for k, (source, f1) in enumerate(zip(sources, f1s, strict=True)):
        hatch = "//" if source.kind == "labels" else None
        ax.bar(x + (k - (len(sources) - 1) / 2) * width, np.nan_to_num(f1), width,
               label=source.name, hatch=hatch, edgecolor="black", linewidth=0.4)  # fmt: skip
    ax.set_xticks(x, RANKS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title(f"F1 per rank against {evaluation.gold} (score > {threshold:g})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    path = out_dir / "f1_by_rank.png"
    _save(fig, path)
    return path


def threshold_plot(evaluation: Evaluation, out_dir: Path, threshold: float) -> Path:
    from matplotlib.figure import Figure

    sources = _ordered(evaluation)
    header = ["source", "rank", "threshold", "n_gold", "correct", "wrong", "precision",
              "recall", "f1"]  # fmt: skip
    rows = []
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(len(SWEEP_RANKS), 2, squeeze=False)
    for i, rank in enumerate(SWEEP_RANKS):
        r = RANKS.index(rank)
        for source in sources:
            sweep = threshold_sweep(
                source.rank_ids[:, r], source.scores[:, r], evaluation.gold_ids[:, r]
            )
            for j in range(len(SWEEP_THRESHOLDS)):
                rows.append([source.name, rank] + [sweep[k][j] for k in header[2:]])
            style = "--" if source.kind == "labels" else "-"
            for col, metric in enumerate(("precision", "recall")):
                axes[i, col].plot(sweep["threshold"], sweep[metric], style, label=source.name)
        for col, metric in enumerate(("precision", "recall")):
            ax = axes[i, col]
            ax.axvline(threshold, color="grey", lw=0.8, ls=":")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("score threshold")
            ax.set_ylabel(metric)
            ax.set_title(f"{rank}: {metric}")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Precision and recall against the threshold (gold {evaluation.gold})")
    write_tsv(out_dir / "threshold_sweep.tsv", header, rows)
    path = out_dir / "threshold_sweep.png"
    _save(fig, path)
    return path


def reliability_plot(evaluation: Evaluation, out_dir: Path) -> Path:
    from matplotlib.figure import Figure

    sources = _ordered(evaluation)
    header = ["source", "rank", "bin_low", "bin_high", "n", "mean_score", "accuracy", "ece"]
    rows = []
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    axes = fig.subplots(1, len(SWEEP_RANKS), squeeze=False)[0]
    for ax, rank in zip(axes, SWEEP_RANKS, strict=True):
        r = RANKS.index(rank)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfectly calibrated")
        for source in sources:
            rel = reliability(source.rank_ids[:, r], source.scores[:, r], evaluation.gold_ids[:, r])
            for b in range(rel["n"].size):
                rows.append(
                    [source.name, rank, rel["bin_low"][b], rel["bin_high"][b], rel["n"][b],
                     rel["mean_score"][b], rel["accuracy"][b], rel["ece"]]
                )  # fmt: skip
            filled = rel["n"] > 0
            style = "s--" if source.kind == "labels" else "o-"
            ax.plot(rel["mean_score"][filled], rel["accuracy"][filled], style, ms=4,
                    label=f"{source.name} (ECE {rel['ece']:.3f})")  # fmt: skip
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("mean score in bin")
        ax.set_ylabel("observed accuracy")
        ax.set_title(f"reliability at {rank}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    write_tsv(out_dir / "reliability.tsv", header, rows)
    path = out_dir / "reliability.png"
    _save(fig, path)
    return path


def write_plots(evaluation: Evaluation, out_dir: Path, *, threshold: float = 0.8) -> list[Path]:
    """Draw the three evaluation plots into ``out_dir``; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        f1_by_rank(evaluation, out_dir, threshold),
        threshold_plot(evaluation, out_dir, threshold),
        reliability_plot(evaluation, out_dir),
    ]
