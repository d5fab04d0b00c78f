"""Tetranucleotide frequencies (TNF) exactly as vamb defines them, vectorised over many contigs.

256 tetramer counts -> frequencies - 1/256 -> projection onto a fixed 103-dimensional
basis of the vectors that obey the constraints every TNF obeys::

    codes, offsets = encode_batch([b"ACGTACGT...", b"GGCC..."])
    tnf = project(tetramer_counts(codes, offsets))      # (2, 103) float32
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

try:  # optional C accelerator (built by `pip install`); numpy does the same without it
    from tdstore.features import _kmercount
except ImportError:  # pragma: no cover - depends on the build
    _kmercount = None

N_TETRAMERS = 256
N_TNF = 103
# A=0, C=1, G=2, T=3; everything else (N, IUPAC codes, gaps) is 4 = "not a base".
INVALID = 4
_CODE = np.full(256, INVALID, dtype=np.uint8)
for _i, _base in enumerate(b"ACGT"):
    _CODE[_base] = _i
    _CODE[_base + 32] = _i  # lower case
_CODE_TABLE = _CODE.tobytes()
_UPPER_CASE = bytes(range(ord("A"), ord("Z") + 1))
# count_bytes' flags: the data holds a lower-case letter / a byte that is not a letter.
HAS_LOWER = 1
HAS_NON_LETTER = 2


def encode(buffer: bytes) -> np.ndarray:
    """Bytes -> base codes (uint8 0-3); non-ACGT letters become :data:`INVALID`."""
    # bytes.translate runs at memory speed, several times faster than a numpy lookup.
    return np.frombuffer(buffer.translate(_CODE_TABLE), dtype=np.uint8)


def encode_batch(sequences: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate sequences into one code array plus ``offsets`` (n + 1, int64)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return encode(b"".join(sequences)), offsets


def tetramer_counts(codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Counts of the 256 tetramers (ACGT order, AAAA first) per contig: (n, 256) int64.

    ``codes[offsets[i]:offsets[i+1]]`` is contig ``i``. Windows holding a non-ACGT
    code are not counted (as in vamb).
    """
    return count_batch(codes, offsets)[0]


def count_bytes(data: bytes, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Tetramer counts (n, 256), base counts (n, 5) and flags of sequences in one buffer.

    ``data[offsets[i]:offsets[i+1]]`` is contig ``i``, in either case. The flags say
    whether ``data`` holds lower-case letters (:data:`HAS_LOWER`) or bytes that are not
    letters (:data:`HAS_NON_LETTER`). The compiled counter (one pass, without the GIL, so
    another thread can compress or hash meanwhile) is used where it was built; numpy
    computes the same otherwise.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    if _kmercount is not None:
        counts = np.zeros((n, N_TETRAMERS), dtype=np.int64)
        bases = np.zeros((n, INVALID + 1), dtype=np.int64)
        flags = _kmercount.count(data, offsets, counts, bases)
        return counts, bases, flags
    counts, bases = count_batch(encode(data), offsets)
    flags = 0
    for byte in set(data[int(offsets[0]) : int(offsets[-1])].translate(None, _UPPER_CASE)):
        flags |= HAS_LOWER if ord("a") <= byte <= ord("z") else HAS_NON_LETTER
    return counts, bases, flags


def join_and_count(
    sequences: list[str],
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`count_bytes` for a list of str: (data, offsets, tetramers, bases, flags).

    ``data`` is the sequences joined into one ASCII buffer; the compiled counter copies
    and counts each sequence in one pass. Raises UnicodeEncodeError for non-ASCII text.
    """
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    if _kmercount is not None:
        n = len(sequences)
        counts = np.zeros((n, N_TETRAMERS), dtype=np.int64)
        bases = np.zeros((n, INVALID + 1), dtype=np.int64)
        joined = _kmercount.join_count(sequences, offsets, counts, bases)
        if joined is not None:  # None: a sequence is not ASCII; encode() below says which
            data, flags = joined
            return data, offsets, counts, bases, flags
    data = "".join(sequences).encode("ascii")
    counts, bases, flags = count_bytes(data, offsets)
    return data, offsets, counts, bases, flags


def count_batch(codes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tetramer counts (n, 256) and base counts (n, 5: A, C, G, T, other) per contig.

    One pass of numpy over the batch, then one bincount per contig: long slices keep
    the per-call overhead negligible and need no (n x 256)-sized index arithmetic.
    """
    n = len(offsets) - 1
    counts = np.zeros((n, N_TETRAMERS), dtype=np.int64)
    total = int(offsets[-1]) if n else 0
    starts, ends = offsets[:-1], offsets[1:]
    codes = codes[:total]
    # Non-ACGT codes count as A (code & 3) here; their windows are taken out below.
    # Scratch buffers are reused between batches: fresh multi-MB arrays cost page faults.
    quad = np.bitwise_and(codes, 3, out=_scratch("quad", total))
    if total >= 4:
        pairs = np.left_shift(quad[:-1], 2, out=_scratch("pairs", total - 1))
        pairs |= quad[1:]
        quad = np.left_shift(pairs[:-2], 4, out=quad[: total - 3])
        quad |= pairs[2:]
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            if end - start >= 4:
                counts[i] = np.bincount(quad[start : end - 3], minlength=N_TETRAMERS)
    has_invalid = total > 0 and int(codes.max()) >= INVALID
    if not has_invalid:
        return counts, _base_counts(codes, offsets, counts, np.zeros(0, dtype=np.int64))
    invalid = np.flatnonzero(np.equal(codes, INVALID, out=_scratch("invalid", total, bool)))
    dirty = _distinct(np.searchsorted(offsets, invalid, side="right") - 1, n)
    # Windows starting up to 3 bases before a non-ACGT base, within the same contig.
    skipped = np.zeros(total, dtype=bool)
    for back in range(4):
        skipped[invalid[invalid >= back] - back] = True
    window = np.flatnonzero(skipped)
    contig = np.searchsorted(offsets, window, side="right") - 1
    inside = window <= ends[contig] - 4
    # Linear time even for N-rich assemblies (np.unique / ufunc.at are not).
    key = contig[inside] * N_TETRAMERS + quad[window[inside]]
    counts -= np.bincount(key, minlength=n * N_TETRAMERS).reshape(n, N_TETRAMERS)
    return counts, _base_counts(codes, offsets, counts, dirty)


def _distinct(indices: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``indices`` (all in 0..n-1), in linear time."""
    seen = np.zeros(n, dtype=bool)
    seen[indices] = True
    return np.flatnonzero(seen)


_SCRATCH = threading.local()


def _scratch(name: str, size: int, dtype: type = np.uint8) -> np.ndarray:
    """A per-thread reusable buffer of at least ``size`` elements (its first ``size``)."""
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(max(size, 1 << 20), dtype=dtype)
        setattr(_SCRATCH, name, buffer)
    return buffer[:size]


def _base_counts(
    codes: np.ndarray, offsets: np.ndarray, counts: np.ndarray, dirty: np.ndarray
) -> np.ndarray:
    """Per-contig A/C/G/T/other counts, mostly read off the tetramer counts.

    A clean contig's bases at positions 0..L-4 are the first bases of its windows;
    the last three are added directly. Contigs with non-ACGT bases (rare) or shorter
    than a window are counted from their codes.
    """
    n = len(offsets) - 1
    bases = np.zeros((n, INVALID + 1), dtype=np.int64)
    bases[:, :4] = counts.reshape(n, 4, 64).sum(axis=2)
    lengths = np.diff(offsets)
    tail = offsets[1:, None] - np.arange(1, 4)[None, :]
    long_enough = lengths >= 4
    tail_contig = np.repeat(np.arange(n), 3).reshape(n, 3)[long_enough].ravel()
    tail_codes = codes[tail[long_enough].ravel()] if long_enough.any() else tail_contig
    np.add.at(bases, (tail_contig, tail_codes), 1)
    redo = _distinct(np.concatenate([dirty, np.flatnonzero(~long_enough)]), n)
    for i in redo.tolist():
        bases[i] = np.bincount(codes[offsets[i] : offsets[i + 1]], minlength=INVALID + 1)
    return bases


def single_threaded_blas() -> Any:
    """A context in which BLAS (behind :func:`project`) runs in the calling thread only.

    Ingest projects small batches between other work on every core: a multi-threaded
    BLAS would leave its helper threads spinning after each call, taking CPU from the
    threads that parse, hash and compress.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def project(counts: np.ndarray) -> np.ndarray:
    """(n, 256) tetramer counts -> (n, 103) float32 TNF (vamb's ``_project``).

    A contig without a single countable window gets frequencies 0, i.e. -1/256 everywhere.
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    frequencies = counts / totals - 1.0 / N_TETRAMERS
    return (frequencies @ kernel()).astype(np.float32)


def tnf(sequences: Sequence[bytes | str]) -> np.ndarray:
    """TNF of a few sequences (convenience; ingest works on its own batches)."""
    raw = [s.encode("ascii") if isinstance(s, str) else s for s in sequences]
    codes, offsets = encode_batch(raw)
    return project(tetramer_counts(codes, offsets))


def kmers(k: int) -> list[str]:
    """All k-mers in ACGT order: the row order of counts and kernel."""
    return ["".join(p) for p in itertools.product("ACGT", repeat=k)]


def reverse_complement(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGTacgt", "TGCAtgca"))


def constraint_matrix() -> np.ndarray:
    """The linear constraints on a centred TNF vector x (one per row, A @ x = 0).

    1. sum(x) = 0 (frequencies sum to one, minus 1/256 each);
    2. x[k] = x[revcomp(k)] (the sequenced strand is arbitrary);
    3. sum_x x[ABCx] = sum_x x[xABC] (consecutive windows overlap by three bases).
    """
    index = {kmer: i for i, kmer in enumerate(kmers(4))}
    rows = [np.ones(N_TETRAMERS)]
    for kmer in kmers(4):
        rc = reverse_complement(kmer)
        if kmer < rc:
            row = np.zeros(N_TETRAMERS)
            row[index[kmer]], row[index[rc]] = 1.0, -1.0
            rows.append(row)
    for trimer in kmers(3):
        row = np.zeros(N_TETRAMERS)
        for base in "ACGT":
            row[index[trimer + base]] += 1.0
            row[index[base + trimer]] -= 1.0
        rows.append(row)
    return np.array(rows)


KERNEL_FILE = Path(__file__).with_name("tnf_kernel.npy")


@cache
def kernel() -> np.ndarray:
    """The (256, 103) projection kernel (float64, read-only), as shipped with tdstore.

    The null-space basis is unique only up to rotation and LAPACK builds differ in
    which rotation they return, so the basis is computed once (:func:`compute_kernel`)
    and shipped, as vamb ships its kernel.npz: every store's TNF is in the same basis.
    """
    result = np.load(KERNEL_FILE)
    if result.shape != (N_TETRAMERS, N_TNF) or result.dtype != np.float64:
        raise AssertionError(f"{KERNEL_FILE}: corrupt TNF kernel {result.shape} {result.dtype}")
    result.setflags(write=False)
    return result


def compute_kernel() -> np.ndarray:
    """Build the kernel: an orthonormal basis of the constraints' null space.

    From the SVD (as scipy's ``null_space`` does), pre-multiplied by the
    reverse-complement averaging matrix as vamb's ``create_kernel.py`` does.
    ``python -m tdstore.features.tnf`` rewrites :data:`KERNEL_FILE` with it.
    """
    constraints = constraint_matrix()
    _, singular, vh = np.linalg.svd(constraints, full_matrices=True)
    tolerance = singular.max() * max(constraints.shape) * np.finfo(float).eps
    rank = int((singular > tolerance).sum())
    basis = vh[rank:].T
    if basis.shape != (N_TETRAMERS, N_TNF):
        raise AssertionError(f"TNF kernel has shape {basis.shape}, expected (256, 103)")
    index = {kmer: i for i, kmer in enumerate(kmers(4))}
    average = np.zeros((N_TETRAMERS, N_TETRAMERS))
    for column, kmer in enumerate(kmers(4)):
        average[index[kmer], column] += 0.5
        average[index[reverse_complement(kmer)], column] += 0.5
    return average @ basis


if __name__ == "__main__":
    np.save(KERNEL_FILE, compute_kernel())
    print(f"wrote {KERNEL_FILE}")
