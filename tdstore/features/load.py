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
# The float64 normalisation runs on slices this small: its temporaries (~16 MB) are then
# recycled by the allocator instead of page-faulted in afresh (4x less CPU measured).
TRANSFORM_ROWS = 16384


def read_slice(array: Any, lo: int, hi: int, target: np.ndarray) -> None:
    """``target[:] = array[lo:hi]``, decoding Zarr chunks straight into ``target``."""
    selection = (slice(lo, hi),) + (slice(None),) * (array.ndim - 1)
    try:
        from zarr.core.buffer import default_buffer_prototype

        nd_buffer = default_buffer_prototype().nd_buffer.from_numpy_array(target)
        array.get_basic_selection(selection, out=nd_buffer)
    except (ImportError, AttributeError, TypeError):
        target[...] = array[selection]  # not a Zarr v3 array (e.g. numpy): plain copy


def read_rows(
    array: Any,
    rows: np.ndarray,
    *,
    block_bytes: int = BLOCK_BYTES,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """``array[rows]`` for sorted unique ``rows``, reading each needed chunk exactly once.

    Runs of consecutive chunks that hold wanted rows are read with one slice (split every
    ``block_bytes``) and the wanted rows taken out; chunks without a wanted row are never
    read. ``out`` and ``scratch`` (at least ``block_bytes`` of rows) let a caller reuse
    buffers across calls.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError("rows must be one-dimensional")
    n = int(array.shape[0])
    shape = (rows.size, *array.shape[1:])
    if out is None:
        out = np.empty(shape, dtype=array.dtype)
    elif out.shape != shape or out.dtype != array.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {shape}")
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
        a, b = bounds[begin], bounds[i]
        if b - a == hi - lo:
            read_slice(array, lo, hi, out[a:b])  # every row of the run is wanted
        else:
            if scratch is None or scratch.shape[0] < hi - lo:
                scratch = np.empty((max_chunks * chunk, *shape[1:]), dtype=array.dtype)
            block = scratch[: hi - lo]
            read_slice(array, lo, hi, block)
            np.take(block, rows[a:b] - lo, axis=0, out=out[a:b])
        if i < len(touched):
            first, begin = touched[i], i
    return out


def _scratch(array: Any, block_bytes: int) -> np.ndarray:
    """A buffer for one slice of ``array`` as :func:`read_rows` cuts them."""
    chunk = int(array.chunks[0])
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    rows = chunk * max(1, block_bytes // max(chunk * row_bytes, 1))
    return np.empty((min(rows, int(array.shape[0])), *array.shape[1:]), dtype=array.dtype)


def resolve_rows(store: Store, subset: str | np.ndarray | None) -> np.ndarray:
    """All rows (None), a saved subset's rows (name), or the given rows sorted and unique."""
    if subset is None:
        return np.arange(store.n_contigs, dtype=np.int64)
    if isinstance(subset, str):
        from tdstore.subsets import load_rows

        return load_rows(store, subset)
    rows = np.asarray(subset, dtype=np.int64).ravel()
    if rows.size > 1 and not np.all(rows[1:] > rows[:-1]):
        rows = np.unique(rows)  # only when needed: unique sorts (slow on millions of rows)
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
    # Two sets of buffers: one being filled by the reader thread, one being normalised.
    largest = max((b - a for a, b in blocks), default=0)
    buffers = [
        {
            name: (
                np.empty((largest, *array.shape[1:]), dtype=array.dtype),
                _scratch(array, block_bytes),
            )
            for name, array in (("tnf", tnf), ("abundance", abundance))
        }
        for _ in range(2 if len(blocks) > 1 else 1)
    ]

    def read(i: int) -> dict[str, np.ndarray]:
        a, b = blocks[i]
        part = rows[a:b]
        slot = buffers[i % len(buffers)]
        return {
            name: read_rows(
                array,
                part,
                block_bytes=block_bytes,
                out=slot[name][0][: b - a],
                scratch=slot[name][1],
            )
            for name, array in (("tnf", tnf), ("abundance", abundance))
        }

    # Read the next block (decompression releases the GIL) while normalising this one.
    with (
        Progress("load features", total=rows.size, unit="rows", enabled=progress) as bar,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(read, 0) if blocks else None
        for i, (a, b) in enumerate(blocks):
            assert pending is not None
            block = pending.result()
            pending = pool.submit(read, i + 1) if i + 1 < len(blocks) else None
            for lo in range(0, b - a, TRANSFORM_ROWS):
                hi = min(b - a, lo + TRANSFORM_ROWS)
                out[a + lo : a + hi] = stats.transform(
                    block["tnf"][lo:hi], block["abundance"][lo:hi]
                )
            bar.advance(b - a)
    return out
