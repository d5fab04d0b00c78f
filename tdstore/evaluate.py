"""Per-rank precision, recall and F1 of runs and label sets against a gold label set.

TaxDistill's definitions (per contig, not length weighted): a call at a rank counts only
if its score is strictly above the threshold; precision = correct / (correct + wrong);
recall = correct / contigs whose gold lineage reaches the rank::

    table = evaluate(tdstore.open("sim.tdstore"), gold="truth", runs=["kd"], label_sets=["mmseqs"])
    per_rank_metrics(pred_ids, pred_scores, gold_ids, 0.8)["species"]["f1"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tdstore import __version__
from tdstore.errors import IncompleteError, SchemaError, UsageError
from tdstore.schemas import declarations as S
from tdstore.store import Store, validate_name
from tdstore.tables import read_table, write_table
from tdstore.taxonomy import RANKS, Taxonomy

N_RANKS = len(RANKS)
METRICS_DIR = "metrics"
SWEEP_THRESHOLDS = np.round(np.arange(0.50, 0.995, 0.01), 2)
_COUNTS = ("n_contigs", "n_gold", "correct", "wrong", "unassigned", "overcalled")


# ----- pure metric functions -------------------------------------------------------------
def _as_threshold(threshold: float) -> np.float32:
    # Scores are stored as float32: comparing them with a float64 threshold would make a
    # stored 0.8 (0.800000011...) a call at threshold 0.8. Both sides in float32 instead.
    return np.float32(threshold)


def _called(pred_ids: np.ndarray, pred_scores: np.ndarray, threshold: float) -> np.ndarray:
    scores = np.asarray(pred_scores, dtype=np.float32)
    return (np.asarray(pred_ids) >= 0) & (scores > _as_threshold(threshold))  # NaN: no call


# Each (contig, rank) cell is in exactly one state; counting states is one bincount.
NONE, CORRECT, WRONG, UNASSIGNED, OVERCALLED = range(5)
_N_STATES = 5
# State by (has gold, called, same id) as bits 2, 1, 0.
_STATE_OF = np.array(
    [NONE, NONE, OVERCALLED, OVERCALLED, UNASSIGNED, UNASSIGNED, WRONG, CORRECT], dtype=np.uint8
)


def cell_states(
    pred_rank_ids: np.ndarray, pred_scores: np.ndarray, gold_rank_ids: np.ndarray, threshold: float
) -> np.ndarray:
    """(n, 7) uint8 state of each cell: none, correct, wrong, unassigned or overcalled.

    A gold id of -1 means the gold lineage stops above that rank; a call is a predicted
    id >= 0 whose score is > threshold.
    """
    gold = np.asarray(gold_rank_ids)
    pred = np.asarray(pred_rank_ids)
    if gold.shape != pred.shape or gold.ndim != 2 or gold.shape[1] != N_RANKS:
        raise ValueError(f"expected (n, {N_RANKS}) arrays, got {pred.shape} and {gold.shape}")
    index = (gold >= 0).view(np.uint8) << 2
    index |= _called(pred, pred_scores, threshold).view(np.uint8) << 1
    index |= (pred == gold).view(np.uint8)
    return _STATE_OF[index]


def state_table(
    states: np.ndarray, codes: np.ndarray | None = None, n_groups: int = 1
) -> np.ndarray:
    """(n_groups, 7, 5) number of cells per group, rank and state: one bincount.

    ``codes`` gives each contig's group (0..n_groups-1; negative = in no group); all
    contigs form group 0 when it is None.
    """
    offsets = np.arange(N_RANKS, dtype=np.int64) * _N_STATES
    if codes is None:
        keys = states + offsets
    else:
        codes = np.asarray(codes, dtype=np.int64)
        member = codes >= 0
        keys = (codes[member] * (N_RANKS * _N_STATES))[:, None] + offsets + states[member]
    size = n_groups * N_RANKS * _N_STATES
    return np.bincount(keys.ravel(), minlength=size)[:size].reshape(n_groups, N_RANKS, _N_STATES)


def counts_from_table(table: np.ndarray, n_contigs: np.ndarray) -> dict[str, np.ndarray]:
    """Named (n_groups, 7) int64 counts from a :func:`state_table`."""
    out = {
        "n_contigs": np.repeat(np.asarray(n_contigs)[:, None], N_RANKS, axis=1),
        "n_gold": table[:, :, [CORRECT, WRONG, UNASSIGNED]].sum(axis=2),
        "correct": table[:, :, CORRECT],
        "wrong": table[:, :, WRONG],
        "unassigned": table[:, :, UNASSIGNED],
        "overcalled": table[:, :, OVERCALLED],
    }
    return {name: counts.astype(np.int64) for name, counts in out.items()}


def count_states(
    states: np.ndarray, codes: np.ndarray | None = None, n_groups: int = 1
) -> dict[str, np.ndarray]:
    """Counts per group and rank, each an (n_groups, 7) int64 array (see :func:`state_table`)."""
    if codes is None:
        n_contigs = np.array([states.shape[0]])
    else:
        codes = np.asarray(codes, dtype=np.int64)
        n_contigs = np.bincount(codes[codes >= 0], minlength=n_groups)[:n_groups]
    return counts_from_table(state_table(states, codes, n_groups), n_contigs)


def grouped_counts(
    pred_rank_ids: np.ndarray,
    pred_scores: np.ndarray,
    gold_rank_ids: np.ndarray,
    threshold: float,
    codes: np.ndarray | None = None,
    n_groups: int = 1,
) -> dict[str, np.ndarray]:
    """:func:`cell_states` then :func:`count_states`: counts per group and rank."""
    states = cell_states(pred_rank_ids, pred_scores, gold_rank_ids, threshold)
    return count_states(states, codes, n_groups)


def rates(
    correct: np.ndarray, wrong: np.ndarray, n_gold: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision (NaN without calls), recall (NaN without gold) and F1 (0 if P + R = 0)."""
    correct = np.asarray(correct, dtype=np.float64)
    calls = correct + np.asarray(wrong, dtype=np.float64)
    n_gold = np.asarray(n_gold, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(calls > 0, correct / calls, np.nan)
        recall = np.where(n_gold > 0, correct / n_gold, np.nan)
        p, r = np.nan_to_num(precision), np.nan_to_num(recall)
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    f1 = np.where(n_gold > 0, f1, np.nan)
    return precision, recall, f1


def per_rank_metrics(
    pred_rank_ids: np.ndarray,
    pred_scores: np.ndarray,
    gold_rank_ids: np.ndarray,
    threshold: float,
) -> dict[str, dict[str, float]]:
    """Metrics per rank name for (n, 7) predicted ids, scores and gold ids (-1 = none).

    Rows are contigs with a gold label (drop the others first). Returns, per rank,
    n_contigs, n_gold, correct, wrong, unassigned, overcalled, precision, recall, f1.
    """
    counts = grouped_counts(pred_rank_ids, pred_scores, gold_rank_ids, threshold)
    precision, recall, f1 = rates(counts["correct"][0], counts["wrong"][0], counts["n_gold"][0])
    out: dict[str, dict[str, float]] = {}
    for r, rank in enumerate(RANKS):
        row: dict[str, Any] = {name: int(counts[name][0, r]) for name in _COUNTS}
        row.update(precision=float(precision[r]), recall=float(recall[r]), f1=float(f1[r]))
        out[rank] = row
    return out


def threshold_sweep(
    pred_ids: np.ndarray,
    pred_scores: np.ndarray,
    gold_ids: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = SWEEP_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of ONE rank column at many thresholds (sorted scores, no loop)."""
    pred = np.asarray(pred_ids)
    gold = np.asarray(gold_ids)
    scores = np.asarray(pred_scores, dtype=np.float32)
    has_gold = gold >= 0
    scored = has_gold & (pred >= 0) & ~np.isnan(scores)
    right = scored & (pred == gold)
    correct_scores = np.sort(scores[right])
    wrong_scores = np.sort(scores[scored & ~right])
    t = np.asarray(thresholds, dtype=np.float32)
    correct = correct_scores.size - np.searchsorted(correct_scores, t, side="right")
    wrong = wrong_scores.size - np.searchsorted(wrong_scores, t, side="right")
    n_gold = np.full(t.shape, int(has_gold.sum()))
    precision, recall, f1 = rates(correct, wrong, n_gold)
    return {
        "threshold": t.astype(np.float64),
        "n_gold": n_gold,
        "correct": correct.astype(np.int64),
        "wrong": wrong.astype(np.int64),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def reliability(
    pred_ids: np.ndarray, pred_scores: np.ndarray, gold_ids: np.ndarray, n_bins: int = 10
) -> dict[str, Any]:
    """Calibration of ONE rank column: per score bin, mean score vs observed accuracy.

    Uses every predicted node with a gold label at that rank, whatever its score; ``ece``
    is the expected calibration error (bin-size weighted |accuracy - mean score|).
    """
    pred = np.asarray(pred_ids)
    gold = np.asarray(gold_ids)
    scores = np.asarray(pred_scores, dtype=np.float64)
    scored = (gold >= 0) & (pred >= 0) & ~np.isnan(scores)
    s = scores[scored]
    right = (pred[scored] == gold[scored]).astype(np.float64)
    bins = np.clip((s * n_bins).astype(np.int64), 0, n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_score = np.bincount(bins, weights=s, minlength=n_bins) / n
        accuracy = np.bincount(bins, weights=right, minlength=n_bins) / n
    total = int(n.sum())
    ece = float(np.nansum(n * np.abs(accuracy - mean_score)) / total) if total else float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_low": edges[:-1],
        "bin_high": edges[1:],
        "n": n.astype(np.int64),
        "mean_score": mean_score,
        "accuracy": accuracy,
        "ece": ece,
    }


# ----- loading sources from a store --------------------------------------------------------
@dataclass
class Source:
    """One thing evaluated: its calls aligned to the gold rows."""

    name: str  # run name, or labels:<set>
    kind: str  # "run" or "labels"
    key: str  # the run or label set name
    rank_ids: np.ndarray  # (m, 7) int64, -1 = no node at that rank
    scores: np.ndarray  # (m, 7) float32


@dataclass
class Evaluation:
    """Gold rows, their groupings, and every source's calls on them."""

    gold: str
    rows: np.ndarray  # (m,) store rows with a gold label
    gold_ids: np.ndarray  # (m, 7)
    groupings: list[tuple[list[str], np.ndarray]]  # (group names, code per gold row)
    sources: list[Source] = field(default_factory=list)
    _cross_cache: Any = field(default=None, init=False, repr=False)

    def _cross(self) -> tuple[np.ndarray, int, list[np.ndarray]]:
        """Every grouping at once: one mixed-radix code per contig over all groupings, and
        for each grouping the group of every code (-1 = none), so a source needs one count."""
        if self._cross_cache is not None:
            return self._cross_cache
        combined = np.zeros(self.rows.size, dtype=np.int64)
        stride = 1
        strides = []
        for names, codes in self.groupings:
            combined += (np.asarray(codes, dtype=np.int64) + 1) * stride
            strides.append((stride, len(names) + 1))
            stride *= len(names) + 1
        all_codes = np.arange(stride)
        maps = [(all_codes // st) % radix - 1 for st, radix in strides]
        self._cross_cache = (combined, stride, maps)
        return self._cross_cache

    def source_metrics(self, source: Source, threshold: float) -> list[dict[str, Any]]:
        out = []
        states = cell_states(source.rank_ids, source.scores, self.gold_ids, threshold)
        combined, n_combined, maps = self._cross()
        table = state_table(states, combined, n_combined)
        sizes = np.bincount(combined, minlength=n_combined)
        for (names, _), group_of in zip(self.groupings, maps, strict=True):
            valid = group_of >= 0
            grouped = np.zeros((len(names), N_RANKS, _N_STATES), dtype=np.int64)
            np.add.at(grouped, group_of[valid], table[valid])
            n_contigs = np.bincount(group_of[valid], weights=sizes[valid], minlength=len(names))
            counts = counts_from_table(grouped, n_contigs)
            precision, recall, f1 = rates(counts["correct"], counts["wrong"], counts["n_gold"])
            for g, group in enumerate(names):
                if counts["n_contigs"][g, 0] == 0:
                    continue
                for r, rank in enumerate(RANKS):
                    row: dict[str, Any] = {
                        "source": source.name,
                        "gold": self.gold,
                        "group": group,
                        "rank": rank,
                        "threshold": float(_as_threshold(threshold)),
                    }
                    row.update({name: int(counts[name][g, r]) for name in _COUNTS})
                    row.update(
                        precision=float(precision[g, r]),
                        recall=float(recall[g, r]),
                        f1=float(f1[g, r]),
                    )
                    out.append(row)
        return out

    def metrics_table(self, threshold: float, sources: Sequence[Source] | None = None) -> pa.Table:
        """Metrics rows (schema tdstore.metrics) of ``sources`` (default: all)."""
        chosen = self.sources if sources is None else sources
        rows = [r for source in chosen for r in self.source_metrics(source, threshold)]
        return pa.Table.from_pylist(rows, schema=_metrics_schema())


def _rank_index(taxonomy: Taxonomy) -> np.ndarray:
    lookup = {rank: i for i, rank in enumerate(RANKS)}
    return np.asarray([lookup.get(rank, -1) for rank in taxonomy.ranks], dtype=np.int64)


def _label_matrix(
    store: Store, name: str, taxonomy: Taxonomy, gold_pos: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """A label set as calls with score 1.0 at every rank of its lineage, at the gold rows."""
    table, _ = store.labels(name)
    pos = gold_pos[table.column("row").to_numpy()]
    keep = pos >= 0
    ids = np.full((m, N_RANKS), -1, dtype=np.int64)
    ids[pos[keep]] = taxonomy.rank_matrix(table.column("taxon_id").to_numpy()[keep])
    return ids, np.where(ids >= 0, np.float32(1.0), np.float32(np.nan))


def read_predictions(store: Store, run: str) -> pa.Table:
    """The columns evaluation needs of runs/<run>/predictions.parquet (schema, refhash checked)."""
    from tdstore.student.runs import load_predictions

    table, _ = load_predictions(store, run, columns=["row", "lineage_ids", "lineage_scores"])
    return table


def _prediction_matrix(
    store: Store,
    run: str,
    taxonomy: Taxonomy,
    rank_of: np.ndarray,
    gold_pos: np.ndarray,
    m: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A run's lineages as (m, 7) ids and scores at the gold rows (-1 / NaN: no node)."""
    table = read_predictions(store, run)
    where = f"{store.path}/runs/{run}/predictions.parquet"
    rows = table.column("row").to_numpy()
    lineage_ids = pa.chunked_array(table.column("lineage_ids")).combine_chunks()
    lineage_scores = pa.chunked_array(table.column("lineage_scores")).combine_chunks()
    same_length = pc.equal(pc.list_value_length(lineage_ids), pc.list_value_length(lineage_scores))
    if pc.all(same_length).as_py() is False:
        raise SchemaError(f"{where}: lineage_ids and lineage_scores differ in length")
    if rows.size and (rows.min() < 0 or rows.max() >= store.n_contigs):
        raise SchemaError(f"{where}: rows outside the store (0..{store.n_contigs - 1})")
    flat_ids = pc.list_flatten(lineage_ids).to_numpy(zero_copy_only=False)
    flat_scores = pc.list_flatten(lineage_scores).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(lineage_ids).to_numpy(zero_copy_only=False)
    if flat_ids.size and (flat_ids.min() < 0 or flat_ids.max() >= len(taxonomy)):
        raise SchemaError(f"{where}: taxon ids outside the store's taxonomy")
    # Place each node by its rank, not its list position: robust to a lineage that starts
    # below the domain or carries the root. Only gold rows are kept.
    rank = rank_of[flat_ids]
    pos = gold_pos[rows][parent]
    keep = (rank >= 0) & (pos >= 0)
    cell = pos[keep] * N_RANKS + rank[keep]
    ids = np.full(m * N_RANKS, -1, dtype=np.int64)
    scores = np.full(m * N_RANKS, np.nan, dtype=np.float32)
    ids[cell] = flat_ids[keep]
    scores[cell] = flat_scores[keep]
    return ids.reshape(m, N_RANKS), scores.reshape(m, N_RANKS)


def _sample_codes(store: Store, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    table = store.contigs(columns=["row", "sample", "kept"])
    encoded = pc.dictionary_encode(table.column("sample")).combine_chunks()
    names = [str(v) for v in encoded.dictionary.to_pylist()]
    by_row = np.full(store.n_contigs, -1, dtype=np.int64)
    by_row[table.column("row").to_numpy()] = pc.fill_null(encoded.indices, -1).to_numpy()
    return [f"sample:{name}" for name in names], by_row[rows]


def load_evaluation(
    store: Store, *, gold: str, runs: Sequence[str] = (), label_sets: Sequence[str] = ()
) -> Evaluation:
    """Read the gold set, the groups and every source's calls, aligned to the gold rows."""
    if not runs and not label_sets:
        raise UsageError("nothing to evaluate: name at least one run or --labels set")
    taxonomy = store.taxonomy()
    gold_table, _ = store.labels(gold)
    rows = gold_table.column("row").to_numpy()
    gold_ids = taxonomy.rank_matrix(gold_table.column("taxon_id").to_numpy())
    groupings: list[tuple[list[str], np.ndarray]] = [(["all"], np.zeros(rows.size, np.int64))]
    sample_names, sample_codes = _sample_codes(store, rows)
    if sample_names:
        groupings.append((sample_names, sample_codes))
    novel = gold_table.column("novel")
    if novel.null_count < len(novel):
        flags = pc.fill_null(pc.cast(novel, pa.int64()), -1).to_numpy()
        groupings.append((["known", "novel"], flags))
    evaluation = Evaluation(gold, rows, gold_ids, groupings)
    # Position of each store row among the gold rows (-1: no gold): sources are built at
    # the gold rows only, never as store-sized matrices.
    gold_pos = np.full(store.n_contigs, -1, dtype=np.int64)
    gold_pos[rows] = np.arange(rows.size)
    for name in dict.fromkeys(label_sets):
        ids, scores = _label_matrix(store, name, taxonomy, gold_pos, rows.size)
        evaluation.sources.append(Source(f"labels:{name}", "labels", name, ids, scores))
    rank_of = _rank_index(taxonomy)
    for run in dict.fromkeys(runs):
        ids, scores = _prediction_matrix(store, run, taxonomy, rank_of, gold_pos, rows.size)
        evaluation.sources.append(Source(run, "run", run, ids, scores))
    return evaluation


# ----- storing metrics ---------------------------------------------------------------------
def metrics_path(store: Store, kind: str, key: str) -> Path:
    """runs/<run>/metrics.parquet for a run, metrics/labels-<set>.parquet for a label set."""
    if kind == "run":
        from tdstore.student.runs import METRICS_FILE, run_dir

        return run_dir(store, key) / METRICS_FILE
    validate_name(key, "label set")
    return store.path / METRICS_DIR / f"labels-{key}.parquet"


def save_metrics(store: Store, source: Source, table: pa.Table) -> Path:
    """Merge ``table`` into the source's metrics file: rows of the same gold and threshold
    are replaced, others kept (rows made for other store content are dropped)."""
    path = metrics_path(store, source.kind, source.key)
    key = f"metrics-{source.kind}-{source.key}"
    with store.lock(key, timeout=60):
        # `tdstore drop` takes this lock too: an object dropped while it was evaluated gets
        # no orphan metrics file.
        owner = path.parent if source.kind == "run" else store.label_path(source.key)
        if not owner.exists():
            raise IncompleteError(
                f"{store.path}: {'run' if source.kind == 'run' else 'label set'} "
                f"{source.key!r} was dropped while it was evaluated; its metrics are not saved"
            )
        merged = table
        if path.exists():
            old, meta = read_table(path, S.METRICS)
            if meta.get("tdstore.refhash") == store.refhash:
                keys = {(g, t) for g, t in zip(*_key_columns(table), strict=True)}
                keep = [k not in keys for k in zip(*_key_columns(old), strict=True)]
                merged = pa.concat_tables(
                    [old.filter(pa.array(keep, pa.bool_())).cast(table.schema), table]
                )
        write_table(
            path,
            S.METRICS,
            merged,
            metadata={
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "tdstore_version": __version__,
            },
            refhash=store.refhash,
        )
    return path


def _key_columns(table: pa.Table) -> tuple[list[str], list[float]]:
    thresholds = pc.cast(table.column("threshold"), pa.float32()).to_pylist()
    return table.column("gold").to_pylist(), thresholds


def read_metrics(store: Store, run: str | None = None, label_set: str | None = None) -> pa.Table:
    """Stored metrics of one run or one label set (empty table if never evaluated)."""
    if (run is None) == (label_set is None):
        raise ValueError("give exactly one of run, label_set")
    kind, key = ("run", run) if run is not None else ("labels", str(label_set))
    path = metrics_path(store, kind, key)
    if not path.exists():
        return _metrics_schema().empty_table()
    return read_table(path, S.METRICS)[0]


def _metrics_schema() -> pa.Schema:
    return S.METRICS.arrow_schema().remove_metadata()


# ----- the whole step ------------------------------------------------------------------------
@dataclass
class Report:
    table: pa.Table
    evaluation: Evaluation
    saved: list[Path]
    plots: list[Path]


def run_evaluation(
    store: Store | str | Path,
    *,
    gold: str,
    runs: Sequence[str] = (),
    label_sets: Sequence[str] = (),
    threshold: float = 0.8,
    plots: str | Path | None = None,
    save: bool = True,
) -> Report:
    """Evaluate, store the metrics with each source, and draw plots if ``plots`` is a dir."""
    if not isinstance(store, Store):
        store = Store(Path(store))
    if not 0.0 <= threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {threshold}")
    if plots is not None:
        from tdstore.outputs import check_output_dir

        plots = check_output_dir(plots, option="--plots", store=store)
    evaluation = load_evaluation(store, gold=gold, runs=runs, label_sets=label_sets)
    tables = [
        (source, evaluation.metrics_table(threshold, [source])) for source in evaluation.sources
    ]
    saved = [save_metrics(store, source, table) for source, table in tables] if save else []
    plot_paths: list[Path] = []
    if plots is not None:
        from tdstore.plots import write_plots

        plot_paths = write_plots(evaluation, Path(plots), threshold=threshold)
    table = pa.concat_tables([t for _, t in tables])
    return Report(table, evaluation, saved, plot_paths)


def evaluate(
    store: Store | str | Path,
    *,
    gold: str,
    runs: Sequence[str] = (),
    label_sets: Sequence[str] = (),
    threshold: float = 0.8,
    plots: str | Path | None = None,
    save: bool = True,
) -> pa.Table:
    """All metrics rows (schema tdstore.metrics) of the runs and label sets against ``gold``."""
    return run_evaluation(
        store,
        gold=gold,
        runs=runs,
        label_sets=label_sets,
        threshold=threshold,
        plots=plots,
        save=save,
    ).table


def novel_species_errors(table: pa.Table) -> dict[str, dict[str, float]]:
    """Per source: wrong species calls on novel contigs / novel contigs (needs a novel group).

    A species call on a novel contig is wrong whether gold names another species or stops
    above species, so ``overcalled`` counts too.
    """
    out: dict[str, dict[str, float]] = {}
    for row in table.to_pylist():
        if row["group"] == "novel" and row["rank"] == "species":
            wrong = row["wrong"] + row["overcalled"]
            n = row["n_contigs"]
            out[row["source"]] = {
                "novel_contigs": n,
                "wrong_species": wrong,
                "rate": wrong / n if n else float("nan"),
            }
    return out
