"""``tdstore teach``: soft labels from an embedding set and a noisy label set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("teach")(teach)


def teach(
    store: Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")],
    embeddings: Annotated[
        str, typer.Option("--embeddings", help="Embedding set to train on (tdstore embed).")
    ],
    labels: Annotated[str, typer.Option("--labels", help="Noisy label set to learn from.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Soft label set name (default: EMBEDDINGS.LABELS)."),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            "--folds",
            help="Cross-fitting folds: each contig's soft label comes from a head that never "
            "saw its label. 1 trains on everything (the paper's way).",
        ),
    ] = 5,
    head: Annotated[
        str, typer.Option("--head", help="linear (the paper's, no bias) or mlp.")
    ] = "linear",
    top_k: Annotated[
        int, typer.Option("--top-k", help="Leaves kept per contig (the rest is one mass).")
    ] = 10,
    epochs: Annotated[
        int,
        typer.Option("--epochs", help="Maximum epochs per head (early stopping on 10% of rows)."),
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed for folds, init and shuffling.")] = 0,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda or cuda:N (mps on an Apple GPU).")
    ] = "cpu",
    label_posterior: Annotated[
        bool,
        typer.Option(
            "--label-posterior/--teacher-only",
            help="Soft labels = posterior of the true taxon given the teacher AND the noisy "
            "label (noise rate fitted by maximum likelihood), or the teacher's prediction alone.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a soft label set of the same name.")
    ] = False,
) -> None:
    """Train the teacher head on noisy labels and store cross-fitted soft labels + the head."""
    import tdstore
    from tdstore.devices import check_device
    from tdstore.teacher.soft_labels import head_path, load_metadata
    from tdstore.teacher.teach import teach as run_teach

    check_device(device)  # before the config line: a bad option is the only line printed
    handle = tdstore.open(store)
    config = {
        "embeddings": embeddings,
        "labels": labels,
        "name": name,
        "folds": folds,
        "head": head,
        "top_k": top_k,
        "epochs": epochs,
        "seed": seed,
        "device": device,
        "label_posterior": label_posterior,
    }
    typer.echo(f"teach: tdstore {tdstore.__version__} config {json.dumps(config)}", err=True)
    done = run_teach(handle, **config, overwrite=overwrite)  # type: ignore[arg-type]
    meta = load_metadata(handle, done)
    folds_text = ", ".join(
        f"{m['accuracy']:.3f}"
        for m in meta.get("fold_metrics") or []
        if m.get("accuracy") is not None
    )
    typer.echo(
        f"soft labels {done}: {handle.n_contigs:,} contigs, {meta['n_labelled']:,} labelled, "
        f"{len(meta['leaf_ids']):,} leaves, head {meta['head']}, folds {meta['folds']}"
    )
    if folds_text:
        typer.echo(f"held-out accuracy vs the noisy labels per fold: {folds_text}")
    posterior = meta.get("label_posterior")
    if posterior:
        from tdstore.teacher.posterior import COPIES_LABELS, MIN_NOISE

        noise = posterior["noise"]
        bound = " (lower bound: the teacher rules no label out)" if noise <= MIN_NOISE else ""
        kept = posterior["mean_label_weight"]
        typer.echo(
            f"label posterior: fitted label noise {noise:.2g}{bound}, "
            f"mean P(label right) {kept:.3f}"
        )
        if kept >= COPIES_LABELS:
            typer.echo(
                "note: the teacher overrules almost no label: where a label names a species, "
                "its soft label is that species; only truncated labels get the teacher's split"
            )
    typer.echo(f"head: {head_path(handle, done)}")
