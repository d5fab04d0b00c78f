"""The k-mer teacher: canonical k-mer frequencies, for machines without a GPU and for demos.

A k-mer and its reverse complement count as one (contigs have no strand)::

    vectors = kmer_matrix(["ACGTTGCA", "AAAAC"], k=4)   # 2 x 136 float32, rows sum to 1
    names = canonical_kmers(4)                          # column names, e.g. "AAAA", "AAAC"
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

K_RANGE = range(4, 7)
# A=0 C=1 G=2 T=3; anything else (N, IUPAC) breaks the k-mers that cover it.
_CODE = np.full(256, 255, dtype=np.uint8)
for _i, _base in enumerate("ACGT"):
    _CODE[ord(_base)] = _i
    _CODE[ord(_base.lower())] = _i


def parse_kmer_model(spec: str) -> int | None:
    """``"kmer:4"`` -> 4; anything not starting with ``kmer:`` -> None (a model directory)."""
    if not spec.startswith("kmer:"):
        return None
    from tdstore.errors import UsageError

    # Exactly ASCII digits: int() would also take " 4", "+4" or "4_0", which are typos.
    digits = spec.split(":", 1)[1]
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"--model {spec!r}: expected kmer:K with K in 4..6, e.g. kmer:4")
    k = int(digits)
    if k not in K_RANGE:
        raise UsageError(f"--model {spec}: K must be 4, 5 or 6")
    return k


@cache
def _canonical_columns(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Map every k-mer code (0..4^k-1) to its column; also each column's canonical code."""
    codes = np.arange(4**k, dtype=np.int64)
    revcomp = np.zeros_like(codes)
    rest = codes.copy()
    for _ in range(k):
        revcomp = revcomp * 4 + (3 - rest % 4)
        rest //= 4
    canonical = np.minimum(codes, revcomp)
    unique, column = np.unique(canonical, return_inverse=True)
    return column.astype(np.int64), unique


def n_columns(k: int) -> int:
    """136, 512 and 2080 for k = 4, 5, 6."""
    return len(_canonical_columns(k)[1])


def canonical_kmers(k: int) -> list[str]:
    """Column names: the lexicographically smaller of each k-mer / reverse-complement pair."""
    codes = _canonical_columns(k)[1].tolist()
    return ["".join("ACGT"[(c >> (2 * (k - 1 - i))) & 3] for i in range(k)) for c in codes]


def kmer_counts(sequence: str, k: int) -> np.ndarray:
    """Canonical k-mer counts of one sequence (k-mers with a non-ACGT base are skipped)."""
    column, canonical = _canonical_columns(k)
    n = len(canonical)
    codes = _CODE[np.frombuffer(sequence.encode("ascii", "replace"), dtype=np.uint8)]
    if codes.size < k:
        return np.zeros(n, dtype=np.int64)
    valid = codes != 255
    values = np.where(valid, codes, 0).astype(np.int64)
    index = np.zeros(codes.size - k + 1, dtype=np.int64)
    ok = np.ones(codes.size - k + 1, dtype=bool)
    for offset in range(k):
        index = index * 4 + values[offset : offset + index.size]
        ok &= valid[offset : offset + index.size]
    return np.bincount(column[index[ok]], minlength=n)


def kmer_matrix(sequences: Sequence[str], k: int) -> np.ndarray:
    """Frequencies (rows sum to 1; a row without any valid k-mer is all zero), float32."""
    out = np.zeros((len(sequences), n_columns(k)), dtype=np.float32)
    for i, sequence in enumerate(sequences):
        counts = kmer_counts(sequence, k)
        total = counts.sum()
        if total:
            out[i] = counts / total
    return out
