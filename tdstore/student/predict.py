"""Predictions of a trained run: for the store's contigs, or for new contigs. No GPU, no teacher.

New contigs get features exactly as ingest computes them (vamb TNF, abundances
aligned by contig id) scaled with the run's stored normalisation statistics::

    path = predict_store(store, "kd-a05")                       # runs/kd-a05/predictions.parquet
    predict_new(store, "kd-a05", "new.fna", "new_abundance.tsv", "new.parquet")

Contigs shorter than the store's ingest minimum get a row without a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tdstore.errors import BadInputError, SchemaError, UsageError
from tdstore.features.normalise import NormalisationStats
from tdstore.progress import Progress
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.student import runs
from tdstore.student.calibrate import Calibration, Signals
from tdstore.taxonomy import Hierarchy

CHUNK_ROWS = 65536
CALL_THRESHOLD = 0.5


@dataclass
class LoadedRun:
    name: str
    doc: dict[str, Any]
    model: Any  # StudentNet
    hierarchy: Hierarchy
    calibration: Calibration
    normalisation: NormalisationStats


@dataclass
class PredictionArrays:
    taxa: np.ndarray  # (n, 7) taxon ids of the greedy chain, -1 = none
    raw: np.ndarray  # (n, 7) student node probabilities, NaN = none
    scores: np.ndarray  # (n, 7) calibrated, non-increasing along the chain


def weights_to_tensors(model: Any, head: Any, hierarchy: Hierarchy) -> dict[str, Any]:
    import torch

    tensors = {f"student.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if head is not None:
        tensors["head.weight"] = head.weight.detach().cpu().contiguous()
    tensors["hierarchy.leaf_ids"] = torch.as_tensor(hierarchy.leaf_ids, dtype=torch.int64)
    return tensors


def load_model(store: Store, name: str, *, device: str = "cpu") -> LoadedRun:
    """The student of a finished run, its tree, calibration and normalisation."""
    from safetensors.torch import load_file

    from tdstore.student.network import StudentNet

    doc = runs.load_finished_run(store, name)
    path = runs.run_dir(store, name) / runs.WEIGHTS_FILE
    try:
        tensors = load_file(str(path), device=device)
    except Exception as exc:  # safetensors raises several types on damage
        raise SchemaError(f"{path}: unreadable weights ({exc})") from None
    leaf_ids = tensors["hierarchy.leaf_ids"].cpu().numpy()
    hierarchy = Hierarchy.from_labels(store.taxonomy(), leaf_ids)
    if not np.array_equal(hierarchy.leaf_ids, leaf_ids):
        raise SchemaError(f"{path}: the store's taxonomy no longer gives this run's leaf order")
    net = doc["network"]
    model = StudentNet(
        int(net["n_inputs"]),
        int(net["n_leaves"]),
        hidden=int(net["hidden"]),
        n_layers=int(net["layers"]),
        dropout=float(net["dropout"]),
    )
    state = {k[len("student.") :]: v for k, v in tensors.items() if k.startswith("student.")}
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(
        name=name,
        doc=doc,
        model=model,
        hierarchy=hierarchy,
        calibration=Calibration.from_dict(doc.get("calibration")),
        normalisation=NormalisationStats.from_dict(doc["normalisation"]),
    )


def predict_arrays(
    model: Any,
    hierarchy: Hierarchy,
    calibration: Calibration,
    x: np.ndarray,
    *,
    teacher: Any = None,
    device: str = "cpu",
) -> PredictionArrays:
    """Chain, raw and calibrated scores for feature rows ``x`` (teacher: TeacherArrays)."""
    from tdstore.student.chains import chain_scores, infer, taxon_matrix, teacher_node_probs

    n = x.shape[0]
    taxa = np.full((n, 7), -1, dtype=np.int64)
    raw = np.full((n, 7), np.nan)
    scores = np.full((n, 7), np.nan)
    # Node probabilities are (chunk, nodes) float64: keep a chunk near 64 MB.
    chunk = int(max(64, min(8192, (64 << 20) // (8 * max(1, len(hierarchy.node_ids))))))
    for start, probs, depth in infer(model, x, device=device, chunk=chunk):
        end = start + probs.shape[0]
        chain, chain_raw = chain_scores(hierarchy, probs)
        signals = Signals(raw=chain_raw, depth=np.where(chain >= 0, depth, np.nan))
        if teacher is not None:
            part = teacher.take(np.arange(start, end))
            signals.teacher = teacher_node_probs(
                hierarchy, chain, part.index, part.prob, part.rest, part.present
            )
        taxa[start:end] = taxon_matrix(hierarchy, chain)
        raw[start:end] = chain_raw
        scores[start:end] = calibration.apply(signals)
    return PredictionArrays(taxa=taxa, raw=raw, scores=scores)


def _lists(values: np.ndarray, lengths: np.ndarray, dtype: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.arange(values.shape[1])[None, :] < lengths[:, None]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[keep], type=dtype))


def predictions_table(
    rows: np.ndarray, contig_ids: list[str] | np.ndarray, arrays: PredictionArrays
) -> pa.Table:
    """Schema tdstore.predictions: the whole chain is kept; readers threshold lineage_scores."""
    lengths = (arrays.taxa >= 0).sum(axis=1)
    called = np.nan_to_num(arrays.scores, nan=-1.0) > CALL_THRESHOLD
    depth = called.sum(axis=1)  # scores are non-increasing: calls form a prefix
    deepest = np.where(depth > 0, arrays.taxa[np.arange(len(depth)), np.maximum(depth - 1, 0)], 0)
    return pa.table(
        {
            "row": pa.array(np.asarray(rows, dtype=np.int64)),
            "contig_id": pa.array([str(c) for c in contig_ids], pa.string()),
            "taxon_id": pa.array(deepest.astype(np.int64)),
            "lineage_ids": _lists(arrays.taxa, lengths, pa.int64()),
            "lineage_scores": _lists(arrays.scores.astype(np.float32), lengths, pa.float32()),
            "raw_scores": _lists(arrays.raw.astype(np.float32), lengths, pa.float32()),
        }
    )


def _store_teacher(store: Store, doc: dict[str, Any], hierarchy: Hierarchy) -> Any:
    """The stored soft labels for calibration signals, if the run was distilled from them."""
    name = doc.get("config", {}).get("soft_labels")
    if not name or "teacher" not in (doc.get("calibration") or {}).get("coefs", {}):
        return None
    from tdstore.student.data import teacher_arrays
    from tdstore.teacher.soft_labels import load_soft_labels

    table, _ = load_soft_labels(store, name, columns=["row", "leaf_ids", "leaf_probs", "rest_mass"])
    return teacher_arrays(table, hierarchy)


def store_prediction_table(
    store: Store, loaded: LoadedRun, *, device: str = "cpu", progress: bool = False
) -> pa.Table:
    from tdstore.features.load import load_features

    teacher = _store_teacher(store, loaded.doc, loaded.hierarchy)
    ids = store.contig_ids()
    parts = []
    with Progress("predict", total=store.n_contigs, unit="contigs", enabled=progress) as bar:
        for start in range(0, store.n_contigs, CHUNK_ROWS):
            rows = np.arange(start, min(start + CHUNK_ROWS, store.n_contigs), dtype=np.int64)
            x = load_features(store, rows)
            arrays = predict_arrays(
                loaded.model,
                loaded.hierarchy,
                loaded.calibration,
                x,
                teacher=None if teacher is None else teacher.take(rows),
                device=device,
            )
            parts.append(predictions_table(rows, ids[rows], arrays))
            bar.advance(len(rows))
    if not parts:
        return predictions_table(np.zeros(0, np.int64), [], _empty())
    return pa.concat_tables(parts)


def _empty() -> PredictionArrays:
    return PredictionArrays(np.zeros((0, 7), np.int64), np.zeros((0, 7)), np.zeros((0, 7)))


def write_predictions(store: Store, folder: Path, table: pa.Table, run: str) -> Path:
    from tdstore.tables import write_table

    path = folder / runs.PREDICTIONS_FILE
    write_table(path, S.PREDICTIONS, table, metadata={"run": run}, refhash=store.refhash)
    return path


def predict_store(store: Store, name: str, *, device: str = "cpu", progress: bool = False) -> Path:
    """Recompute runs/<name>/predictions.parquet from the saved weights."""
    from tdstore.devices import check_device

    check_device(device)
    with store.lock(f"run-{name}"):
        loaded = load_model(store, name, device=device)
        table = store_prediction_table(store, loaded, device=device, progress=progress)
        return write_predictions(store, runs.run_dir(store, name), table, name)


@dataclass
class NewContigs:
    """The contigs of a FASTA file to predict, in file order, with their features."""

    ids: list[str]
    usable: np.ndarray  # (n,) bool: long enough, with a tetramer of A/C/G/T
    features: np.ndarray  # (usable.sum(), inputs) scaled like the run's training rows
    min_length: int
    n_short: int  # shorter than min_length: no call
    n_no_tetramer: int  # long enough, but not one window of four A/C/G/T bases: no call


def new_contig_features(
    stats: NormalisationStats,
    samples: list[str],
    fasta: Path,
    abundance: Path | None,
    *,
    min_length: int,
) -> NewContigs:
    """Features of a FASTA file's contigs computed exactly as ingest computes them.

    The file is read and checked by ingest's own reader (ids, duplicates, empty records,
    characters), and TNF is projected from the same tetramer counts. Contigs shorter than
    ``min_length`` (the store's ingest minimum: the student never saw shorter ones) or
    without a single countable tetramer (whose TNF is undefined) get no features and no
    call; they need no abundance row either.
    """
    from tdstore.features.tnf import project
    from tdstore.ingest.fasta import LetterTally, read_fasta_batches

    k = len(stats.abundance_column_sums)
    if abundance is None and k:
        raise UsageError(f"the run was trained with {k} samples: pass --abundance")
    ids: list[str] = []
    masks: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    n_short = n_no_tetramer = 0
    letters = LetterTally()  # a protein FASTA is refused, as by ingest
    for batch in read_fasta_batches(fasta):
        letters.add(batch)
        long_enough = batch.lengths >= min_length
        counted = batch.tetramers.sum(axis=1) > 0
        usable = long_enough & counted
        n_short += int((~long_enough).sum())
        n_no_tetramer += int((long_enough & ~counted).sum())
        ids.extend(batch.ids)
        masks.append(usable)
        parts.append(project(batch.tetramers[usable]))
    letters.check(fasta)
    usable = np.concatenate(masks)
    composition = np.concatenate(parts, axis=0)
    kept = [cid for cid, ok in zip(ids, usable.tolist(), strict=True) if ok]
    if abundance is None:
        depths = np.zeros((len(kept), 0), dtype=np.float32)
    else:
        depths = _aligned_abundance(abundance, kept, samples)
    return NewContigs(
        ids=ids,
        usable=usable,
        features=stats.transform(composition, depths),
        min_length=min_length,
        n_short=n_short,
        n_no_tetramer=n_no_tetramer,
    )


def _aligned_abundance(path: Path, ids: list[str], samples: list[str]) -> np.ndarray:
    from tdstore.ingest.abundance import read_abundance

    table = read_abundance(path)
    missing_samples = [s for s in samples if s not in table.samples]
    if missing_samples or len(table.samples) != len(samples):
        raise BadInputError(f"{path}: samples {table.samples} differ from the run's {samples}")
    columns = [table.samples.index(s) for s in samples]
    missing = [c for c in ids if c not in table.index]
    if missing:
        raise BadInputError(f"{path}: no abundance row for contig {missing[0]!r}")
    order = np.array([table.index[c] for c in ids], dtype=np.int64)
    return np.asarray(table.values[order][:, columns], dtype=np.float32)


# --output of `predict --fasta`: its suffix picks the format.
PARQUET_SUFFIXES = (".parquet",)
TSV_SUFFIXES = (".tsv", ".txt")


@dataclass
class NewPrediction:
    """What ``predict --fasta`` wrote, for the CLI to report."""

    path: Path
    contigs: int
    called: int  # contigs with a call above the threshold
    min_length: int
    short: int  # shorter than min_length: a row without a call
    no_tetramer: int  # no countable tetramer: a row without a call
    # The run's store contigs were calibrated with their teacher's soft labels; new contigs
    # have none, so theirs use the calibration fitted without that signal.
    without_teacher_signal: bool = False


def predict_new(
    store: Store,
    name: str,
    fasta: Path | str,
    abundance: Path | str | None,
    output: Path | str,
    *,
    device: str = "cpu",
    threshold: float | None = None,
) -> NewPrediction:
    """Predict new contigs with a run; writes Parquet (predictions schema) or a Taxometer TSV.

    Every contig of ``fasta`` gets a row, in file order, so the output joins back to the
    file; one shorter than the store's ingest minimum or without a tetramer of A/C/G/T
    gets an empty lineage (unclassified) instead of a call the student cannot back.
    ``threshold`` (default: export's) applies to the TSV; Parquet keeps every score.

    A run distilled from a teacher's own soft labels calibrates store contigs with the
    teacher's probability of each call too; new contigs have no soft labels, so their
    scores come from the calibrator fitted on the same held-out rows without that signal
    (calibrated, but not identical to what a store contig with the same sequence gets).
    """
    from tdstore.devices import check_device
    from tdstore.export import DEFAULT_THRESHOLD, check_threshold
    from tdstore.outputs import check_output_file

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    check_threshold(threshold)
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + TSV_SUFFIXES:
        accepted = ", ".join(PARQUET_SUFFIXES + TSV_SUFFIXES)
        raise UsageError(
            f"--output {output}: unknown suffix {output.suffix or '(none)'!r}; "
            f"use {accepted} (.tsv and .txt: Taxometer's TSV)"
        )
    check_output_file(output, store=store, inputs=[fasta, abundance])
    check_device(device)
    loaded = load_model(store, name, device=device)
    samples = list(loaded.doc.get("samples") or store.samples)
    contigs = new_contig_features(
        loaded.normalisation,
        samples,
        Path(fasta),
        None if abundance is None else Path(abundance),
        min_length=int(store.core["min_length"]),
    )
    arrays = _empty_rows(len(contigs.ids))
    rows = np.flatnonzero(contigs.usable)
    if rows.size:
        part = predict_arrays(
            loaded.model, loaded.hierarchy, loaded.calibration, contigs.features, device=device
        )
        arrays.taxa[rows], arrays.raw[rows], arrays.scores[rows] = part.taxa, part.raw, part.scores
    table = predictions_table(np.arange(len(contigs.ids)), contigs.ids, arrays)
    from tdstore.export import called_lineages

    called = sum(1 for _, taxa, _ in called_lineages(table, threshold=threshold) if taxa)
    if suffix in TSV_SUFFIXES:
        from tdstore.atomic import write_bytes_atomic
        from tdstore.export import taxometer_lines

        lines = taxometer_lines(table, store.taxonomy(), threshold=threshold)
        write_bytes_atomic(output, "".join(lines).encode())
    else:
        from tdstore.tables import write_table

        write_table(
            output,
            S.PREDICTIONS,
            table,
            metadata={
                "run": name,
                "fasta": str(fasta),
                "note": "rows index the FASTA's contigs",
                "min_length": contigs.min_length,
            },
        )
    return NewPrediction(
        path=output,
        contigs=len(contigs.ids),
        called=called,
        min_length=contigs.min_length,
        short=contigs.n_short,
        no_tetramer=contigs.n_no_tetramer,
        without_teacher_signal="teacher" in loaded.calibration.coefs,
    )


def _empty_rows(n: int) -> PredictionArrays:
    """``n`` rows without a call: no taxa, NaN scores (an empty lineage in the table)."""
    return PredictionArrays(
        np.full((n, 7), -1, dtype=np.int64), np.full((n, 7), np.nan), np.full((n, 7), np.nan)
    )
