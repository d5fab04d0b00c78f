"""Tetranucleotide frequencies (TNF) exactly as vamb defines them, vectorised over many contigs.

256 tetramer counts -> frequencies - 1/256 -> projection onto a fixed 103-dimensional
basis of the vectors that obey the constraints every TNF obeys::

    codes, offsets = encode_batch([b"ACGTACGT...", b"GGCC..."])
    tnf = project(tetramer_counts(codes, offsets))      # (2, 103) float32
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

import numpy as np

N_TETRAMERS = 256
N_TNF = 103
# A=0, C=1, G=2, T=3; everything else (N, IUPAC codes, gaps) is 4 = "not a base".
INVALID = 4
_CODE = np.full(256, INVALID, dtype=np.uint8)
for _i, _base in enumerate(b"ACGT"):
    _CODE[_base] = _i
    _CODE[_base + 32] = _i  # lower case
_CODE_TABLE = _CODE.tobytes()


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
    n = len(offsets) - 1
    counts = np.zeros((n, N_TETRAMERS), dtype=np.int64)
    total = int(offsets[-1]) if n else 0
    if total < 4:
        return counts
    bad = codes[:total] == INVALID
    pairs_bad = bad[:-1] | bad[1:]
    window_bad = pairs_bad[:-2] | pairs_bad[2:]
    low = codes[:total] & 3
    pairs = (low[:-1] << 2) | low[1:]
    # Window i starts at base i; bit 8 marks the windows to skip, so that one
    # bincount per contig (fast: C loops over long slices) needs no boolean filtering.
    key = ((pairs[:-2] << 4) | pairs[2:]).astype(np.uint16)
    key |= window_bad.view(np.uint8).astype(np.uint16) << 8
    for i, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
        if end - start >= 4:
            counts[i] = np.bincount(key[start : end - 3], minlength=2 * N_TETRAMERS)[:N_TETRAMERS]
    return counts


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


@cache
def kernel() -> np.ndarray:
    """The (256, 103) projection kernel, float64, read-only.

    An orthonormal basis of the constraints' null space (from the SVD, as scipy's
    ``null_space`` does), pre-multiplied by the reverse-complement averaging matrix as
    vamb's ``create_kernel.py`` does; the basis is unique only up to rotation.
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
    result = average @ basis
    result.setflags(write=False)
    return result
