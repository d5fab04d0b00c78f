"""The run registry: ``runs/<name>/`` and what lives in it. No torch here (info/check use it).

A run directory is built as ``runs/<name>.tmp-<id>/`` and published by one rename, so
a killed ``tdstore train`` never leaves a finished-looking run::

    run = load_run(store, "kd-a05")            # run.json as a dict, status "finished"
    table, meta = load_predictions(store, "kd-a05")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from tdstore.errors import ConflictError, IncompleteError, SchemaError, TdstoreError
from tdstore.schemas import declarations as S
from tdstore.store import Store, read_document, validate_name
from tdstore.tables import read_metadata, read_table

RUN_FILE = "run.json"
WEIGHTS_FILE = "weights.safetensors"
PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.parquet"
FINISHED = "finished"


def run_dir(store: Store, name: str) -> Path:
    validate_name(name, "run")
    return store.object_dir("runs") / name


def list_names(store: Store) -> list[str]:
    """Published runs (a directory with a run.json; temporaries of live writers excluded)."""
    folder = store.object_dir("runs")
    if not folder.exists():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and ".tmp-" not in p.name and (p / RUN_FILE).exists()
    )


def load_run(store: Store, name: str) -> dict[str, Any]:
    """run.json of a run (schema-checked); IncompleteError names the known runs."""
    path = run_dir(store, name) / RUN_FILE
    if not path.exists():
        known = ", ".join(list_names(store)) or "none"
        raise IncompleteError(f"{store.path}: no run {name!r} (known: {known})")
    doc = read_document(path, S.RUN.name)
    if doc.get("refhash") not in (None, store.refhash):
        raise ConflictError(f"{path}: trained on other store content; retrain it")
    return doc


def load_finished_run(store: Store, name: str) -> dict[str, Any]:
    doc = load_run(store, name)
    if doc.get("status") != FINISHED:
        raise IncompleteError(f"{store.path}: run {name!r} is {doc.get('status')}, not finished")
    return doc


def load_predictions(
    store: Store, name: str, *, columns: list[str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    path = run_dir(store, name) / PREDICTIONS_FILE
    if not path.exists():
        load_run(store, name)  # a clear error if the run itself is missing
        raise IncompleteError(f"{path}: missing; run `tdstore predict {store.path} {name}`")
    table, meta = read_table(path, S.PREDICTIONS, columns=columns)
    store.check_refhash(meta, path)
    return table, meta


def load_metrics(store: Store, name: str) -> pa.Table | None:
    """metrics.parquet written by ``tdstore evaluate``, or None if not evaluated yet."""
    path = run_dir(store, name) / METRICS_FILE
    if not path.exists():
        return None
    table, _ = read_table(path, S.METRICS)
    return table


def headline_metrics(table: pa.Table | None) -> dict[str, Any]:
    """Per-rank F1 over all contigs (and species F1 of known/novel groups) for listings.

    A run evaluated against several gold sets (or thresholds) has rows for each; the
    listing shows the latest evaluation only (``save_metrics`` appends it last), so no
    figure is shown next to another gold set's name.
    """
    if table is None or table.num_rows == 0:
        return {}
    rows = table.to_pylist()
    latest = (rows[-1]["gold"], rows[-1]["threshold"])
    out: dict[str, Any] = {"gold": latest[0], "threshold": round(latest[1], 3)}
    for row in rows:
        if (row["gold"], row["threshold"]) != latest:
            continue
        if row["group"] == "all":
            out[f"f1_{row['rank']}"] = round(row["f1"], 4)
        elif row["group"] in ("known", "novel") and row["rank"] == "species":
            out[f"{row['group']}_species_f1"] = round(row["f1"], 4)
            out[f"{row['group']}_species_wrong"] = row["wrong"]
    return out


def describe(store: Store, name: str) -> dict[str, Any]:
    doc = load_run(store, name)
    config = doc.get("config", {})
    summary = {
        "status": doc.get("status"),
        "mode": config.get("mode"),
        "labels": config.get("labels"),
        "teacher": config.get("soft_labels") or config.get("teacher_joint"),
        "subset": config.get("subset"),
        "epochs": f"{doc.get('best_epoch')}/{len(doc.get('history', []))}",
        "train_s": round(
            float(doc.get("timings", {}).get("train_s", 0.0))
            + float(doc.get("timings", {}).get("refit_s", 0.0)),
            1,
        ),
    }
    try:
        summary.update(headline_metrics(load_metrics(store, name)))
    except TdstoreError as exc:
        summary["metrics_error"] = str(exc)
    return summary


def check(store: Store, name: str, deep: bool) -> list[str]:
    where = f"runs/{name}"
    try:
        doc = load_run(store, name)
    except TdstoreError as exc:
        return [str(exc)]
    problems = []
    if doc.get("status") != FINISHED:
        problems.append(f"{where}: status {doc.get('status')!r}, not finished")
        return problems
    folder = run_dir(store, name)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        problems.append(f"{where}/{WEIGHTS_FILE}: missing")
    elif deep:
        try:
            from safetensors import safe_open

            with safe_open(str(weights), framework="numpy") as handle:
                keys = set(handle.keys())
            if "hierarchy.leaf_ids" not in keys:
                problems.append(f"{where}/{WEIGHTS_FILE}: no hierarchy.leaf_ids tensor")
        except Exception as exc:  # a damaged file raises several types
            problems.append(f"{where}/{WEIGHTS_FILE}: unreadable ({exc})")
    predictions = folder / PREDICTIONS_FILE
    if not predictions.exists():
        problems.append(f"{where}/{PREDICTIONS_FILE}: missing")
    else:
        try:
            meta = read_metadata(predictions, S.PREDICTIONS)
            store.check_refhash(meta, predictions)
            import pyarrow.parquet as pq

            n = pq.ParquetFile(predictions).metadata.num_rows
            if n != store.n_contigs:
                problems.append(
                    f"{where}/{PREDICTIONS_FILE}: {n} rows, store has {store.n_contigs}"
                )
        except (TdstoreError, SchemaError) as exc:
            problems.append(str(exc))
    metrics = folder / METRICS_FILE
    if metrics.exists():
        try:
            read_metadata(metrics, S.METRICS)
        except TdstoreError as exc:
            problems.append(str(exc))
    return problems


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, default=str)
