"""Everything a student run needs, loaded from the store into memory once.

Training rows are the label set's rows (restricted to a saved subset); the tree is
built from their labels plus the teacher's leaves, so distillation maps by taxon id::

    inputs = load_training_inputs(store, "mmseqs", soft_labels="kmer4.mmseqs")
    inputs.x.shape, inputs.hierarchy.n_leaves, inputs.teacher.index.shape
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tdstore.errors import ConflictError, UsageError
from tdstore.features.normalise import NormalisationStats
from tdstore.store import Store
from tdstore.taxonomy import Hierarchy, Taxonomy


@dataclass
class TeacherArrays:
    """A stored teacher as student leaf indices: (n, k) index/prob, (n,) rest and present."""

    index: np.ndarray
    prob: np.ndarray
    rest: np.ndarray
    present: np.ndarray

    def take(self, rows: np.ndarray) -> TeacherArrays:
        return TeacherArrays(self.index[rows], self.prob[rows], self.rest[rows], self.present[rows])

    def tensors(self) -> Any:
        import torch

        from tdstore.student.kd import SparseTeacher

        return SparseTeacher(
            torch.as_tensor(self.index),
            torch.as_tensor(self.prob),
            torch.as_tensor(self.rest),
            torch.as_tensor(self.present),
        )


@dataclass
class TrainingInputs:
    rows: np.ndarray  # (n,) store rows, sorted
    x: np.ndarray  # (n, K + 103 + 1) float32
    labels: np.ndarray  # (n,) taxon ids, 0 = unclassified
    taxonomy: Taxonomy
    hierarchy: Hierarchy
    normalisation: NormalisationStats
    teacher: TeacherArrays | None = None
    teacher_meta: dict[str, Any] | None = None
    embeddings: np.ndarray | None = None
    embeddings_attrs: dict[str, Any] | None = None


def label_rows(store: Store, labels: str, subset: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, taxon ids) of the label set, restricted to ``subset``."""
    table, _ = store.labels(labels)
    rows = table.column("row").to_numpy().astype(np.int64)
    taxa = table.column("taxon_id").to_numpy().astype(np.int64)
    order = np.argsort(rows, kind="stable")
    rows, taxa = rows[order], taxa[order]
    if subset is not None:
        from tdstore.subsets import load_rows

        keep = np.isin(rows, load_rows(store, subset))
        rows, taxa = rows[keep], taxa[keep]
    if rows.size == 0:
        raise UsageError(
            f"label set {labels!r} has no rows" + (f" in subset {subset!r}" if subset else "")
        )
    if not (taxa > 0).any():
        raise UsageError(f"label set {labels!r} has no classified contig to learn from")
    return rows, taxa


def features(store: Store, rows: np.ndarray, *, progress: bool = False) -> np.ndarray:
    from tdstore.features.load import load_features

    return load_features(store, rows, progress=progress)


def normalisation(store: Store) -> NormalisationStats:
    from tdstore.features.load import normalisation as stored

    return stored(store)


def teacher_arrays(
    table: Any, hierarchy: Hierarchy, rows: np.ndarray | None = None
) -> TeacherArrays:
    """Map a soft label table's top-k taxon ids onto the student's leaf indices.

    A teacher leaf that is an inner node of the student's tree (the student saw a
    deeper label under it) has its mass spread evenly over that node's leaves.
    """
    import pyarrow as pa

    if rows is not None:
        table = table.take(pa.array(np.asarray(rows, dtype=np.int64)))
    ids_col = table.column("leaf_ids").combine_chunks()
    n = len(ids_col)
    k = len(ids_col[0]) if n else 0
    ids = ids_col.flatten().to_numpy().reshape(n, k).astype(np.int64)
    probs = table.column("leaf_probs").combine_chunks().flatten().to_numpy().reshape(n, k)
    rest = table.column("rest_mass").to_numpy().astype(np.float32)
    unique = np.unique(ids)
    missing = [int(t) for t in unique if int(t) not in hierarchy.node_index]
    if missing:
        raise ConflictError(f"teacher leaves {missing[:5]} are not in the student's tree")
    # A dense taxon id -> leaf index table: one gather for millions of rows.
    size = int(max(ids.max(initial=0), hierarchy.leaf_ids.max(initial=0))) + 1
    leaf_of = np.full(size, -1, dtype=np.int64)
    leaf_of[hierarchy.leaf_ids] = np.arange(hierarchy.n_leaves)
    index = leaf_of[ids] if ids.size else ids
    probs = probs.astype(np.float32)
    inner = index < 0
    if inner.any():
        index, probs = _spread_inner(ids, index, probs, hierarchy)
    return TeacherArrays(index, probs, rest, np.ones(n, dtype=bool))


def _spread_inner(
    ids: np.ndarray, index: np.ndarray, probs: np.ndarray, hierarchy: Hierarchy
) -> tuple[np.ndarray, np.ndarray]:
    rows_index: list[list[int]] = []
    rows_prob: list[list[float]] = []
    for r in range(ids.shape[0]):
        out_i: list[int] = []
        out_p: list[float] = []
        for taxon, leaf, p in zip(
            ids[r].tolist(), index[r].tolist(), probs[r].tolist(), strict=True
        ):
            if leaf >= 0:
                out_i.append(leaf)
                out_p.append(p)
                continue
            node = hierarchy.node_index[taxon]
            start, end = int(hierarchy.start[node]), int(hierarchy.end[node])
            out_i += list(range(start, end))
            out_p += [p / (end - start)] * (end - start)
        rows_index.append(out_i)
        rows_prob.append(out_p)
    width = max(len(r) for r in rows_index)
    new_index = np.zeros((ids.shape[0], width), dtype=np.int64)
    new_prob = np.zeros((ids.shape[0], width), dtype=np.float32)
    for r, (i_list, p_list) in enumerate(zip(rows_index, rows_prob, strict=True)):
        new_index[r, : len(i_list)] = i_list
        new_prob[r, : len(p_list)] = p_list
    return new_index, new_prob


def load_training_inputs(
    store: Store,
    labels: str,
    *,
    subset: str | None = None,
    soft_labels: str | None = None,
    embeddings: str | None = None,
    progress: bool = False,
) -> TrainingInputs:
    """Load features, labels and the optional teacher for the training rows, once."""
    rows, taxa = label_rows(store, labels, subset)
    taxonomy = store.taxonomy()
    tree_taxa = [taxa]
    soft_table = soft_meta = None
    if soft_labels is not None:
        from tdstore.teacher.soft_labels import load_soft_labels

        soft_table, soft_meta = load_soft_labels(
            store, soft_labels, columns=["row", "leaf_ids", "leaf_probs", "rest_mass"]
        )
        tree_taxa.append(np.asarray(soft_meta.get("leaf_ids") or [], dtype=np.int64))
    hierarchy = Hierarchy.from_labels(taxonomy, np.concatenate(tree_taxa))
    inputs = TrainingInputs(
        rows=rows,
        x=features(store, rows, progress=progress),
        labels=taxa,
        taxonomy=taxonomy,
        hierarchy=hierarchy,
        normalisation=normalisation(store),
        teacher_meta=soft_meta,
    )
    if soft_table is not None:
        inputs.teacher = teacher_arrays(soft_table, hierarchy, rows)
    if embeddings is not None:
        from tdstore.teacher.embed_store import load_embeddings

        emb, attrs = load_embeddings(store, embeddings, rows=rows)
        inputs.embeddings = np.asarray(emb, dtype=np.float32)
        inputs.embeddings_attrs = dict(attrs or {})
    return inputs
