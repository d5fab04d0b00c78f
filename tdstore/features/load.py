"""Loading the student's inputs for a set of rows: whole chunks read in runs, then masked.

A subset picked by SQL is scattered over the store; gathering it row by row (or with a
fancy index per row) costs a chunk decode per row. Instead every chunk holding a wanted row
is read once, consecutive chunks in one slice, and the wanted rows are taken out::

    x = load_features(store, "gut-bacteroidales")        # (n, K + 103 + 1) float32
    tnf_rows = read_rows(store.tnf(), np.array([3, 17, 5000]))
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tdstore.errors import ConflictError, IncompleteError, UsageError
from tdstore.features.normalise import NormalisationStats
from tdstore.progress import Progress
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import check_array

# One slice reads at most this much: large enough for Zarr to decode chunks concurrently,
# small enough that the float64 normalisation of a block stays a few hundred MB.
BLOCK_BYTES = 64 << 20


def read_rows(array: Any, rows: np.ndarray, *, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """``array[rows]`` for sorted unique ``rows``, reading each needed chunk exactly once.

    Runs of consecutive chunks that hold wanted rows are read with one slice (split every
    ``block_bytes``); chunks without a wanted row are never read.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError("rows must be one-dimensional")
    n = int(array.shape[0])
    out = np.empty((rows.size, *array.shape[1:]), dtype=array.dtype)
    if rows.size == 0:
        return out
    if rows[0] < 0 or rows[-1] >= n or (rows.size > 1 and np.any(np.diff(rows) <= 0)):
        raise ValueError(f"rows must be sorted, unique and within 0..{n - 1}")
    if out.size == 0:  # zero columns (a store without abundances): nothing to read
        return out
    chunk = int(array.chunks[0])
    chunk_bytes = chunk * out.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    max_chunks = max(1, block_bytes // max(chunk_bytes, 1))
    chunk_of = rows // chunk
    # Position in ``rows`` where each touched chunk's rows begin.
    starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
    touched = chunk_of[starts].tolist()
    bounds = [*starts.tolist(), rows.size]
    first = touched[0]
    begin = 0
    for i in range(1, len(touched) + 1):
        if (
            i < len(touched)
            and touched[i] == touched[i - 1] + 1
            and touched[i] - first < max_chunks
        ):
            continue
        lo, hi = first * chunk, min((touched[i - 1] + 1) * chunk, n)
        block = array[lo:hi]
        a, b = bounds[begin], bounds[i]
        if b - a == hi - lo:
            out[a:b] = block  # every row of the run is wanted
        else:
            out[a:b] = block[rows[a:b] - lo]
        if i < len(touched):
            first, begin = touched[i], i
    return out


def resolve_rows(store: Store, subset: str | np.ndarray | None) -> np.ndarray:
    """All rows (None), a saved subset's rows (name), or the given rows sorted and unique."""
    if subset is None:
        return np.arange(store.n_contigs, dtype=np.int64)
    if isinstance(subset, str):
        from tdstore.subsets import load_rows

        return load_rows(store, subset)
    rows = np.unique(np.asarray(subset, dtype=np.int64))
    if rows.size and (rows[0] < 0 or rows[-1] >= store.n_contigs):
        raise UsageError(f"rows outside the store (0..{store.n_contigs - 1})")
    return rows


def normalisation(store: Store) -> NormalisationStats:
    stats = store.core.get("normalisation")
    if not stats:
        raise IncompleteError(
            f"{store.core_dir / 'core.json'}: no normalisation statistics; re-run ingest"
        )
    return NormalisationStats.from_dict(stats)


def load_features(
    store: Store,
    subset: str | np.ndarray | None = None,
    *,
    block_bytes: int = BLOCK_BYTES,
    progress: bool = False,
) -> np.ndarray:
    """The student's input matrix (n, K + 103 + 1) float32 for ``subset``, rows sorted.

    ``subset``: None (all rows), a saved subset name, or an array of rows.
    """
    rows = resolve_rows(store, subset)
    stats = normalisation(store)
    tnf, abundance = store.tnf(), store.abundance()
    for name, array, spec in (("tnf", tnf, S.TNF), ("abundance", abundance, S.ABUNDANCE)):
        tag = check_array(array, spec, f"{store.core_dir}/features.zarr/{name}")
        if tag.get("refhash") not in (None, store.refhash):
            raise ConflictError(f"core/features.zarr/{name}: made for other store content")
    width = abundance.shape[1] + tnf.shape[1] + 1
    out = np.empty((rows.size, width), dtype=np.float32)
    # Blocks aligned to TNF chunks (the bulk of the bytes): each TNF chunk is read once;
    # an abundance chunk straddling two blocks is read twice, a small price.
    chunk = int(tnf.chunks[0])
    step = chunk * max(1, block_bytes // (chunk * tnf.shape[1] * tnf.dtype.itemsize))
    edges = np.searchsorted(rows, np.arange(0, store.n_contigs + step, step))
    blocks = [(a, b) for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True) if b > a]

    def read(block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        part = rows[block[0] : block[1]]
        return (
            read_rows(tnf, part, block_bytes=block_bytes),
            read_rows(abundance, part, block_bytes=block_bytes),
        )

    # Read the next block (decompression releases the GIL) while normalising this one.
    with (
        Progress("load features", total=rows.size, unit="rows", enabled=progress) as bar,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(read, blocks[0]) if blocks else None
        for i, (a, b) in enumerate(blocks):
            assert pending is not None
            tnf_rows, abundance_rows = pending.result()
            pending = pool.submit(read, blocks[i + 1]) if i + 1 < len(blocks) else None
            out[a:b] = stats.transform(tnf_rows, abundance_rows)
            bar.advance(b - a)
    return out
