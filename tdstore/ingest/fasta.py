"""Reading contigs from FASTA (plain or gzip) in batches, with per-contig statistics.

dnaio parses; this module validates (ids, duplicates, empty records, binary data) and
turns each batch into upper-cased sequences plus their statistics::

    for batch in read_fasta_batches("contigs.fna.gz"):
        batch.ids, batch.lengths, batch.gc, batch.n_count, batch.md5
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tdstore.errors import BadInputError
from tdstore.features.tnf import INVALID, count_batch, encode

# vamb's concatenate.py renames contigs to S{sample}C{original id}.
_VAMB_SAMPLE = re.compile(r"^(S\d+)C\S")
_LETTERS = bytes(range(ord("A"), ord("Z") + 1))
_BATCH_BASES = 8_000_000
_BATCH_CONTIGS = 20_000


def sample_of(contig_id: str) -> str | None:
    """``S3`` for vamb-style ids like ``S3C1445``, else None."""
    match = _VAMB_SAMPLE.match(contig_id)
    return match.group(1) if match else None


class HashingReader(io.RawIOBase):
    """A binary file that md5-hashes and counts the raw bytes as they are read."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.md5 = hashlib.md5()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.md5.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass
class FastaBatch:
    """Consecutive records: upper-cased sequences joined into one buffer plus statistics."""

    first_record: int  # 1-based record number of the batch's first contig in the file
    ids: list[str]
    data: bytes  # upper-cased sequences, concatenated
    offsets: np.ndarray  # (n + 1,) int64: contig i is data[offsets[i]:offsets[i+1]]
    tetramers: np.ndarray = field(repr=False)  # (n, 256) tetramer counts (tnf.count_batch)
    gc: np.ndarray = field(repr=False)  # float32, NaN where a contig has no A/C/G/T
    n_count: np.ndarray = field(repr=False)  # int64: bases that are not A/C/G/T
    md5: list[str] = field(repr=False)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.ids)


def _open(path: Path, hasher: HashingReader) -> Any:
    import xopen

    # xopen sniffs the magic bytes, so gzip/bz2/xz work whatever the file is called.
    return xopen.xopen(io.BufferedReader(hasher, buffer_size=1 << 20), "rb")


def read_fasta_batches(
    path: Path | str,
    *,
    batch_bases: int = _BATCH_BASES,
    batch_contigs: int = _BATCH_CONTIGS,
    hasher: HashingReader | None = None,
) -> Iterator[FastaBatch]:
    """Yield batches of validated contigs in file order.

    Raises BadInputError (naming the file and the record) for: an empty file, a file
    that is not FASTA, binary data, an empty id, a duplicate id, a zero-length record,
    and characters in a sequence that are not letters.
    """
    import dnaio

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    hasher = hasher or HashingReader(open(path, "rb"))  # noqa: SIM115 - closed below
    seen: set[str] = set()
    ids: list[str] = []
    sequences: list[bytes] = []
    n_bases = 0
    record = 0
    first = 1
    try:
        with _open(path, hasher) as handle, dnaio.open(handle, fileformat="fasta") as reader:
            for rec in reader:
                record += 1
                contig_id = _contig_id(path, record, rec.name)
                if contig_id in seen:
                    raise BadInputError(
                        f"{path}: record {record}: duplicate contig id {contig_id!r}"
                    )
                seen.add(contig_id)
                if not rec.sequence:
                    raise BadInputError(
                        f"{path}: record {record} ({contig_id!r}): empty sequence (length 0)"
                    )
                ids.append(contig_id)
                # dnaio guarantees ASCII, so encoding is a copy.
                sequences.append(rec.sequence.encode("ascii").upper())
                n_bases += len(rec.sequence)
                if n_bases >= batch_bases or len(ids) >= batch_contigs:
                    yield _make_batch(path, first, ids, sequences)
                    first, ids, sequences, n_bases = record + 1, [], [], 0
    except BadInputError:
        raise
    except (dnaio.exceptions.FileFormatError, UnicodeDecodeError) as exc:
        where = f"after record {record}" if record else "at the start"
        raise BadInputError(f"{path}: not a FASTA file ({where}): {exc}") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from None
    finally:
        hasher.close()
    if ids:
        yield _make_batch(path, first, ids, sequences)
    if record == 0:
        raise BadInputError(f"{path}: no FASTA records (empty file?)")


def _contig_id(path: Path, record: int, header: str) -> str:
    parts = header.split(maxsplit=1)
    if not parts:
        raise BadInputError(f"{path}: record {record}: empty FASTA header (no contig id)")
    return parts[0]


def _make_batch(path: Path, first: int, ids: list[str], sequences: list[bytes]) -> FastaBatch:
    data = b"".join(sequences)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    codes = encode(data)
    tetramers, base_counts = count_batch(codes, offsets)
    n_count = base_counts[:, INVALID]
    for i in np.flatnonzero(n_count):
        # Only contigs with non-ACGT bases need the (rare) check for non-letters.
        odd = sequences[i].translate(None, _LETTERS)
        if odd:
            raise BadInputError(
                f"{path}: record {first + i} ({ids[i]!r}): character {chr(odd[0])!r} in the "
                "sequence is not a nucleotide letter"
            )
    acgt = base_counts[:, :4].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gc = ((base_counts[:, 1] + base_counts[:, 2]) / acgt).astype(np.float32)
    md5 = [hashlib.md5(s).hexdigest() for s in sequences]
    return FastaBatch(first, ids, data, offsets, tetramers, gc, n_count, md5)
