"""Teacher soft labels in a store: summarising leaf probabilities, writing, loading, checking.

One Parquet row per kept contig: the top-k leaves with probabilities (T = 1), the
rest mass, the lineage predicted at 0.5 with node probabilities, and the fold::

    table, meta = load_soft_labels(store, "kmer4.mmseqs")
    targets = dense_probabilities(table, meta["leaf_ids"])  # (N, L) float32, rows sum to 1
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tdstore.atomic import atomic_path, discard
from tdstore.errors import IncompleteError, SchemaError, TdstoreError
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata, read_table, write_table
from tdstore.taxonomy import RANKS, ROOT_ID, Hierarchy

SUFFIX = ".parquet"
HEAD_SUFFIX = ".head.safetensors"
# fold value of a contig that had no label: its soft label averages every fold's head.
NO_LABEL_FOLD = -1


def table_path(store: Store, name: str) -> Path:
    return store.named_path("soft_labels", name, SUFFIX)


def head_path(store: Store, name: str) -> Path:
    return store.named_path("soft_labels", name, HEAD_SUFFIX)


def list_names(store: Store) -> list[str]:
    return store.list_objects("soft_labels", SUFFIX)


def summarise(leaf_probs: np.ndarray, hierarchy: Hierarchy, top_k: int) -> dict[str, np.ndarray]:
    """Top-k leaves, rest mass and the 0.5 lineage of each row of ``leaf_probs`` (n, L)."""
    n, n_leaves = leaf_probs.shape
    k = min(top_k, n_leaves)
    # argpartition then a sort of only k columns: O(n L) rather than O(n L log L).
    part = np.argpartition(-leaf_probs, k - 1, axis=1)[:, :k] if k < n_leaves else None
    if part is None:
        part = np.broadcast_to(np.arange(n_leaves), (n, n_leaves)).copy()
    part_probs = np.take_along_axis(leaf_probs, part, axis=1)
    order = np.argsort(-part_probs, axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    top_probs = np.take_along_axis(part_probs, order, axis=1)
    rest = np.clip(1.0 - top_probs.astype(np.float64).sum(axis=1), 0.0, 1.0)
    node_probs = hierarchy.node_probabilities(leaf_probs)
    chain = hierarchy.predict_chain(node_probs, 0.5)
    valid = chain >= 0
    safe = np.where(valid, chain, 0)
    chain_ids = np.where(valid, hierarchy.node_ids[safe], -1)
    chain_probs = np.where(valid, np.take_along_axis(node_probs, safe, axis=1), np.nan)
    depth = valid.sum(axis=1)
    deepest = np.where(
        depth > 0, chain_ids[np.arange(n), np.maximum(depth - 1, 0)], ROOT_ID
    ).astype(np.int64)
    return {
        "leaf_ids": hierarchy.leaf_ids[top].astype(np.int64),
        "leaf_probs": top_probs.astype(np.float32),
        "rest_mass": rest.astype(np.float32),
        "lineage_ids": chain_ids.astype(np.int64),
        "lineage_probs": chain_probs.astype(np.float32),
        "depth": depth.astype(np.int64),
        "taxon_id": deepest,
        "confidence": top_probs[:, 0].astype(np.float32),
    }


def _fixed_lists(values: np.ndarray, lengths: np.ndarray, dtype: pa.DataType) -> pa.ListArray:
    """A list column from an (n, w) matrix keeping the first ``lengths[i]`` items of row i."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.arange(values.shape[1])[None, :] < lengths[:, None]
    flat = pa.array(values[keep], type=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


def to_table(contig_ids: np.ndarray, summary: dict[str, np.ndarray], fold: np.ndarray) -> pa.Table:
    n, k = summary["leaf_ids"].shape
    return pa.table(
        {
            "row": pa.array(np.arange(n, dtype=np.int64)),
            "contig_id": pa.array(list(contig_ids), pa.string()),
            "leaf_ids": _fixed_lists(summary["leaf_ids"], np.full(n, k), pa.int64()),
            "leaf_probs": _fixed_lists(summary["leaf_probs"], np.full(n, k), pa.float32()),
            "rest_mass": pa.array(summary["rest_mass"], pa.float32()),
            "lineage_ids": _fixed_lists(summary["lineage_ids"], summary["depth"], pa.int64()),
            "lineage_probs": _fixed_lists(summary["lineage_probs"], summary["depth"], pa.float32()),
            "taxon_id": pa.array(summary["taxon_id"], pa.int64()),
            "confidence": pa.array(summary["confidence"], pa.float32()),
            "fold": pa.array(fold.astype(np.int16), pa.int16()),
        }
    )


def publish_soft_labels(
    store: Store,
    name: str,
    table: pa.Table,
    metadata: dict[str, Any],
    head: Any,
    head_metadata: dict[str, Any],
) -> Path:
    """Publish a teacher head and its table so that no reader pairs one with another's.

    The table's presence publishes the set and it records its head's sha256. Two files
    cannot be renamed in one step, so the old table (``--overwrite``) is unpublished
    before the new head is renamed in, and the new table follows. A kill leaves the old
    pair, or no set (a head without its table is a leftover that ``tdstore check``
    notes and the re-run replaces), or the new pair; never a head next to a table it
    does not belong to.
    """
    from tdstore.teacher.heads import save_head

    path = table_path(store, name)
    with atomic_path(head_path(store, name)) as head_tmp:
        save_head(head_tmp, head, head_metadata, atomic=False)
        digest = file_sha256(head_tmp)
        if path.exists():
            discard(path)
    return write_soft_labels(store, name, table, metadata, digest)


def write_soft_labels(
    store: Store, name: str, table: pa.Table, metadata: dict[str, Any], head_sha256: str
) -> Path:
    """Publish the table alone, recording ``head_sha256`` (teach uses publish_soft_labels)."""
    path = table_path(store, name)
    write_table(
        path,
        S.SOFT_LABELS,
        table,
        metadata={**metadata, "head_sha256": head_sha256},
        refhash=store.refhash,
    )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(store: Store, name: str) -> Path:
    path = table_path(store, name)
    if not path.exists():
        known = ", ".join(list_names(store)) or "none"
        raise IncompleteError(
            f"{store.path}: no soft labels {name!r} (known: {known}); run `tdstore teach`"
        )
    return path


def load_soft_labels(
    store: Store, name: str, *, columns: list[str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """The soft label table (row order = store rows) and its metadata; checks schema + refhash."""
    path = _require(store, name)
    table, meta = read_table(path, S.SOFT_LABELS, columns=columns)
    store.check_refhash(meta, path)
    if table.num_rows != store.n_contigs:
        raise SchemaError(f"{path}: {table.num_rows} rows, the store has {store.n_contigs}")
    return table, meta


def load_metadata(store: Store, name: str) -> dict[str, Any]:
    path = _require(store, name)
    meta = read_metadata(path, S.SOFT_LABELS)
    store.check_refhash(meta, path)
    return meta


def load_teacher_head(store: Store, name: str, *, device: str = "cpu") -> Any:
    """The saved head of a soft label set (a torch module, see tdstore.teacher.heads).

    Checked against the sha256 its table records: a head from another run of teach
    (an older tdstore's killed ``--overwrite``, a copied file) would score embeddings
    with classes the table does not describe, without any error.
    """
    from tdstore.teacher.heads import load_head

    meta = load_metadata(store, name)
    path = head_path(store, name)
    if not path.exists():
        raise IncompleteError(f"{path}: missing; {_rerun_teach(store, meta, name)}")
    problem = _foreign_head(store, path, meta, name)
    if problem:
        raise SchemaError(problem)
    return load_head(path, device=device)


def _rerun_teach(store: Store, meta: dict[str, Any], name: str) -> str:
    embeddings, labels = meta.get("embeddings", "..."), meta.get("labels", "...")
    return (
        f"re-run `tdstore teach {store.path} --embeddings {embeddings} --labels {labels} "
        f"--name {name} --overwrite`"
    )


def _foreign_head(store: Store, head: Path, meta: dict[str, Any], name: str) -> str | None:
    """A message when ``head`` is not the file the table ``meta`` was published with."""
    if file_sha256(head) == meta.get("head_sha256"):
        return None
    return (
        f"soft_labels/{head.name}: not the head of soft_labels/{name}{SUFFIX} "
        f"(its sha256 differs from the one the table records); {_rerun_teach(store, meta, name)}"
    )


def dense_probabilities(
    table: pa.Table, leaf_ids: list[int] | np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """(n, L) float32 leaf probabilities in ``leaf_ids`` order; rest mass spread evenly."""
    leaf_ids = np.asarray(leaf_ids, dtype=np.int64)
    column_of = np.full(int(leaf_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    column_of[leaf_ids] = np.arange(len(leaf_ids))
    if rows is not None:
        table = table.take(pa.array(np.asarray(rows, dtype=np.int64)))
    ids_col = table.column("leaf_ids").combine_chunks()
    k = len(ids_col[0]) if len(ids_col) else 0
    ids = ids_col.flatten().to_numpy().reshape(-1, k)
    probs = table.column("leaf_probs").combine_chunks().flatten().to_numpy().reshape(-1, k)
    rest = table.column("rest_mass").to_numpy()
    n, n_leaves = ids.shape[0], len(leaf_ids)
    others = max(n_leaves - k, 1)
    out = np.repeat((rest / others).astype(np.float32)[:, None], n_leaves, axis=1)
    columns = column_of[ids]
    out[np.arange(n)[:, None], columns] = probs
    return out


def describe(store: Store, name: str) -> dict[str, Any]:
    meta = load_metadata(store, name)
    folds = meta.get("fold_metrics") or []
    accuracy = [f["accuracy"] for f in folds if f.get("accuracy") is not None]
    return {
        "embeddings": meta.get("embeddings"),
        "labels": meta.get("labels"),
        "head": meta.get("head"),
        "folds": meta.get("folds"),
        "leaves": len(meta.get("leaf_ids") or []),
        "cv_accuracy": round(float(np.mean(accuracy)), 4) if accuracy else None,
    }


def check(store: Store, name: str, deep: bool) -> list[str]:
    """Problems of one soft label set: tag, refhash, head file (its sha256), rows, probabilities."""
    where = f"soft_labels/{name}{SUFFIX}"
    try:
        meta = load_metadata(store, name)
    except TdstoreError as exc:
        return [str(exc)]
    problems = []
    head = head_path(store, name)
    if not head.exists():
        problems.append(
            f"soft_labels/{name}{HEAD_SUFFIX}: missing; {_rerun_teach(store, meta, name)}"
        )
    elif foreign := _foreign_head(store, head, meta, name):
        # Not only --deep: load_teacher_head refuses such a pair, so check must say so.
        problems.append(foreign)
    if not deep:
        return problems
    table, _ = load_soft_labels(store, name)
    if table.column("row").to_pylist() != list(range(store.n_contigs)):
        problems.append(f"{where}: rows are not 0..N-1")
    if table.column("contig_id").to_pylist() != list(store.contig_ids()):
        problems.append(f"{where}: contig ids differ from the store's")
    leaves = set(int(t) for t in meta.get("leaf_ids") or [])
    ids = table.column("leaf_ids").combine_chunks().flatten().to_numpy()
    if not set(np.unique(ids).tolist()) <= leaves:
        problems.append(f"{where}: top-k ids outside the recorded leaf set")
    probs = table.column("leaf_probs").combine_chunks().flatten().to_numpy().astype(np.float64)
    k = len(ids) // max(table.num_rows, 1)
    total = probs.reshape(-1, k).sum(axis=1) + table.column("rest_mass").to_numpy()
    if probs.size and (probs.min() < 0 or np.abs(total - 1).max() > 1e-3):
        problems.append(f"{where}: top-k probabilities plus rest mass do not sum to 1")
    depth = np.asarray(table.column("lineage_ids").combine_chunks().value_lengths())
    if depth.size and depth.max() > len(RANKS):
        problems.append(f"{where}: lineage deeper than {len(RANKS)} ranks")
    return problems
