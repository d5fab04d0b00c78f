"""``tdstore train``, ``predict``, ``export`` and ``runs``: the student, from the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]
RunName = Annotated[str, typer.Argument(help="Run name (see `tdstore runs STORE`).")]
DEVICE_HELP = "cpu, cuda or cuda:N (mps on an Apple GPU)."


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("predict")(predict)
    app.command("export")(export)
    app.command("runs")(runs)


def train(
    store: StorePath,
    labels: Annotated[str, typer.Option("--labels", help="Label set to learn from.")],
    soft_labels: Annotated[
        str | None,
        typer.Option("--soft-labels", help="Distil from these stored teacher soft labels."),
    ] = None,
    teacher_joint: Annotated[
        str | None,
        typer.Option(
            "--teacher-joint",
            help="The paper's scheme: a linear head on these stored embeddings, trained jointly.",
        ),
    ] = None,
    no_teacher: Annotated[
        bool, typer.Option("--no-teacher", help="Plain Taxometer (the default without a teacher).")
    ] = False,
    subset: Annotated[
        str | None, typer.Option("--subset", help="Train only on the rows of this saved subset.")
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Weight of the hard (noisy label) term.")
    ] = 0.5,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Distillation temperature T.")
    ] = 2.0,
    kd_rows: Annotated[
        str,
        typer.Option(
            "--kd-rows",
            help="Rows the stored teacher is distilled on: 'species' (labels that name a "
            "species; others keep the hard loss, so novel species stay at the genus) or 'all'.",
        ),
    ] = "species",
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch.")] = 1024,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak learning rate of the student (default 1e-2 one-cycle; 1e-3 for "
            "--teacher-joint, as the paper).",
        ),
    ] = None,
    schedule: Annotated[
        str,
        typer.Option(
            "--schedule",
            help="onecycle (default), cosine (the paper's; default for --teacher-joint) or constant.",
        ),
    ] = "onecycle",
    patience: Annotated[
        int,
        typer.Option(
            "--patience",
            help="Stop after this many epochs without held-out improvement (0 = never).",
        ),
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", help="Run name (default: mode-labels[-teacher]).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    calibration_fraction: Annotated[
        float,
        typer.Option(
            "--calibration-fraction",
            help="Share of classified rows held out for early stopping and calibration.",
        ),
    ] = 0.1,
    refit_epochs: Annotated[
        int,
        typer.Option(
            "--refit-epochs",
            help="After calibration, epochs on every labelled row (held-out ones too), "
            "so no label goes unused; 0 = none.",
        ),
    ] = 3,
    reach_gate: Annotated[
        float,
        typer.Option(
            "--reach-gate",
            help="Above species, scale a score by min(1, P(label reaches the rank) / this): "
            "taxa the labels of look-alike contigs rarely reach are likely missing from the "
            "reference; 0 = off.",
        ),
    ] = 0.5,
    species_reach_gate: Annotated[
        float,
        typer.Option(
            "--species-reach-gate",
            help="The same at species; 0 = off: a label that stops above species then counts "
            "against a species call in calibration instead.",
        ),
    ] = 0.7,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            "--checkpoint-every",
            help="Save the training state at most every this many seconds (0 = after every "
            "epoch); the same command resumes a killed run from it.",
        ),
    ] = 60.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a finished run of the same name.")
    ] = False,
) -> None:
    """Train a student (Taxometer's network) and predict every contig; publishes runs/NAME/."""
    import tdstore
    from tdstore.errors import UsageError
    from tdstore.student.fit import FitConfig
    from tdstore.student.train import PAPER_LR, TrainRequest, paper_fit_config
    from tdstore.student.train import train as train_run

    if no_teacher and (soft_labels or teacher_joint):
        raise UsageError("--no-teacher cannot be combined with --soft-labels or --teacher-joint")
    if lr is None:
        lr = PAPER_LR if teacher_joint else FitConfig.lr
    fit = FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        alpha=alpha,
        temperature=temperature,
        kd_rows=kd_rows,
        patience=patience or None,
        seed=seed,
        device=device,
    )
    if teacher_joint and schedule == "onecycle":
        fit = paper_fit_config(fit)
    request = TrainRequest(
        labels=labels,
        name=name,
        soft_labels=soft_labels,
        teacher_joint=teacher_joint,
        subset=subset,
        calibration_fraction=calibration_fraction,
        refit_epochs=refit_epochs,
        reach_gate=reach_gate,
        species_reach_gate=species_reach_gate,
        fit=fit,
        checkpoint_every_s=checkpoint_every,
    )
    doc = train_run(tdstore.open(store), request, overwrite=overwrite, argv=sys.argv[1:])
    timings = doc["timings"]
    last = doc["history"][-1]
    if not doc["counts"]["heldout_rows"]:
        typer.echo(
            "note: no labels were held out (too few classified rows, or "
            "--calibration-fraction 0): scores are the network's raw probabilities, "
            "not calibrated",
            err=True,
        )
    for resumed in doc.get("resumed", []):
        typer.echo(f"resumed the {resumed['phase']} phase after epoch {resumed['epoch']}")
    typer.echo(
        f"run {doc['name']}: {doc['config']['mode']}, {doc['counts']['train_rows']:,} training rows"
        f" ({doc['counts']['heldout_rows']:,} held out), {doc['counts']['leaves']:,} leaves"
    )
    typer.echo(
        f"epochs {timings['epochs_run']} (best {doc['best_epoch']}"
        + (
            f", plateau after {doc['annealed_after']}: annealed, then stopped"
            if doc.get("annealed_after")
            else ""
        )
        + "), "
        f"loss {last['loss']:.4f}"
        + (f", held-out loss {last['val_loss']:.4f}" if "val_loss" in last else "")
        + f", {timings['mean_samples_per_s']:,.0f} samples/s"
    )
    typer.echo(
        f"train {timings['train_s'] + timings.get('refit_s', 0.0):.1f} s, predict {timings['predict_s']:.1f} s, "
        f"total {timings['total_s']:.1f} s -> {Path(store) / 'runs' / doc['name']}"
    )


def predict(
    store: StorePath,
    run: RunName,
    fasta: Annotated[
        Path | None, typer.Option("--fasta", help="New contigs to predict (FASTA, plain or gz).")
    ] = None,
    abundance: Annotated[
        Path | None,
        typer.Option("--abundance", help="Abundance TSV of the new contigs (same samples)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Output for new contigs: .parquet (every score), or .tsv / .txt (Taxometer).",
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="TSV output: keep lineage nodes whose calibrated score is above this "
            "(as `tdstore export`; 0.5 is Taxometer's rule).",
        ),
    ] = 0.8,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
) -> None:
    """Recompute a run's predictions for the store, or predict new contigs with it.

    New contigs shorter than the store's ingest --min-length keep a row without a call.
    """
    import tdstore
    from tdstore.errors import UsageError
    from tdstore.student.predict import predict_new, predict_store

    opened = tdstore.open(store)
    if fasta is None:
        if abundance is not None or output is not None:
            raise UsageError("--abundance and --output need --fasta")
        path = predict_store(opened, run, device=device, progress=True)
        typer.echo(f"predictions for {opened.n_contigs:,} contigs -> {path}")
        return
    if output is None:
        raise UsageError("--fasta needs --output FILE (.parquet or .tsv)")
    done = predict_new(opened, run, fasta, abundance, output, device=device, threshold=threshold)
    typer.echo(
        f"predictions for the {done.contigs:,} contigs of {fasta}, {done.called:,} with a call "
        f"above {threshold} -> {done.path}"
    )
    typer.echo(f"{done.short:,} shorter than {done.min_length} bp: no call")
    if done.no_tetramer:
        typer.echo(f"{done.no_tetramer:,} without a tetramer of A/C/G/T bases: no call")
    if done.without_teacher_signal:
        typer.echo(
            f"note: run {run} calibrates store contigs with its teacher's soft labels; new "
            "contigs have none, so their scores use the calibration fitted without them",
            err=True,
        )


def export(
    store: StorePath,
    run: RunName,
    format: Annotated[str, typer.Option("--format", help="taxometer or cami.")],
    output: Annotated[Path, typer.Option("--output", help="File to write.")],
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Keep lineage nodes whose calibrated score is above this. The default 0.8 stops"
            " contigs of species absent from the reference at genus; 0.5 is Taxometer's rule.",
        ),
    ] = 0.8,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Threshold and print the raw (uncalibrated) probabilities."),
    ] = False,
    taxdump: Annotated[
        Path | None,
        typer.Option(
            help="cami: write this taxdump's taxids (nodes.dmp, names.dmp; the gold "
            "standard's NCBI dump for AMBER) instead of the store's taxon ids"
        ),
    ] = None,
) -> None:
    """Write a run's predictions as Taxometer's TSV or a CAMI taxonomic binning file."""
    import tdstore
    from tdstore.export import export_run

    result = export_run(
        tdstore.open(store), run, format, output, threshold=threshold, raw=raw, taxdump=taxdump
    )
    typer.echo(
        f"{result['format']}: {result['contigs']:,} contigs, {result['called']:,} with a call "
        f"above {threshold} -> {result['path']}"
    )
    if result.get("not_in_taxdump"):
        typer.echo(
            f"note: {result['not_in_taxdump']:,} called contigs left out: none of their "
            f"called taxa is in {taxdump}",
            err=True,
        )
    if result.get("above_called_rank"):
        typer.echo(
            f"note: {result['above_called_rank']:,} contigs written at an ancestor of their "
            f"call: {taxdump} lacks the called taxon (_RANK says where each stops)",
            err=True,
        )


def runs(
    store: StorePath,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the store's runs with their settings and (after `tdstore evaluate`) metrics."""
    import tdstore
    from tdstore.student import runs as registry

    opened = tdstore.open(store)
    summaries = {name: registry.describe(opened, name) for name in registry.list_names(opened)}
    if as_json:
        typer.echo(json.dumps(summaries, indent=2, default=str))
        return
    if not summaries:
        typer.echo("no runs yet: `tdstore train STORE --labels NAME`")
        return
    header = ["run", "status", "mode", "labels", "teacher", "subset", "epochs", "train_s"]
    metric_keys = sorted({k for s in summaries.values() for k in s if k.startswith("f1_")})
    ranks = [k for k in (f"f1_{r}" for r in _ranks()) if k in metric_keys]
    extra = [
        k
        for k in ("known_species_f1", "novel_species_wrong")
        if any(k in s for s in summaries.values())
    ]
    typer.echo("\t".join(header + ranks + extra))
    for run_name, summary in summaries.items():
        cells = [run_name] + [
            str(summary.get(k) if summary.get(k) is not None else "-") for k in header[1:]
        ]
        cells += [str(summary.get(k, "-")) for k in ranks + extra]
        typer.echo("\t".join(cells))


def _ranks() -> tuple[str, ...]:
    from tdstore.taxonomy import RANKS

    return RANKS
