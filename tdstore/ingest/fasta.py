"""Reading contigs from FASTA (plain or compressed) in batches, with per-contig statistics.

needletail parses; this module validates (ids, duplicates, empty records, binary data) and
turns each batch into upper-cased sequences plus their statistics::

    for batch in read_fasta_batches("contigs.fna.gz"):
        batch.ids, batch.lengths, batch.gc, batch.n_count, batch.md5
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdstore.errors import BadInputError
from tdstore.features.tnf import HAS_LOWER, HAS_NON_LETTER, INVALID, join_and_count
from tdstore.ingest.files import require_regular_file

# vamb's concatenate.py renames contigs to S{sample}C{original id}.
_VAMB_SAMPLE = re.compile(r"^(S\d+)C\S")
_LETTERS = bytes(range(ord("A"), ord("Z") + 1))
_BATCH_BASES = 8_000_000
_BATCH_CONTIGS = 20_000
# A/C/G/T, N and the IUPAC ambiguity codes: a file mostly of other letters is not DNA
# (protein letters E, F, I, L, P, Q, ...; RNA's U).
_NUCLEOTIDE_LETTERS = b"ACGTNRYSWKMBDHV"
MIN_NUCLEOTIDE_SHARE = 0.9
_SHOW_LETTERS = 4


def sample_of(contig_id: str) -> str | None:
    """``S3`` for vamb-style ids like ``S3C1445``, else None."""
    match = _VAMB_SAMPLE.match(contig_id)
    return match.group(1) if match else None


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
    # Counts by byte of the letters that are not nucleotide letters; None where the batch
    # has too few non-A/C/G/T bases to matter (see LetterTally).
    odd_letters: np.ndarray | None = field(default=None, repr=False)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.ids)


def file_md5(path: Path, stop: threading.Event | None = None) -> str | None:
    """md5 of a file's raw bytes (None if ``stop`` is set first); hashlib releases the GIL."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            if stop is not None and stop.is_set():
                return None
            digest.update(chunk)
    return digest.hexdigest()


def read_fasta_batches(
    path: Path | str,
    *,
    batch_bases: int = _BATCH_BASES,
    batch_contigs: int = _BATCH_CONTIGS,
) -> Iterator[FastaBatch]:
    """Yield batches of validated contigs in file order.

    Raises BadInputError (naming the file and the record) for: a path that is not a
    regular file (a directory, a pipe), an empty file, a file that is not FASTA (FASTQ
    included), binary data, a header that is not UTF-8, an empty id, a duplicate id, a
    zero-length record, and characters in a sequence that are not letters. Whether the
    letters are DNA at all is a whole-file question: :class:`LetterTally`.
    """
    path = Path(path)
    for raw in read_raw_batches(path, batch_bases=batch_bases, batch_contigs=batch_contigs):
        yield finish_batch(path, raw)


@dataclass
class RawBatch:
    """Consecutive parsed records with checked ids; :func:`finish_batch` does the rest."""

    first_record: int
    ids: list[str]
    sequences: list[str]


def read_raw_batches(
    path: Path | str,
    *,
    batch_bases: int = _BATCH_BASES,
    batch_contigs: int = _BATCH_CONTIGS,
) -> Iterator[RawBatch]:
    """The parsing half of :func:`read_fasta_batches` (a pipeline runs the halves in two
    threads): records, ids, duplicates, empty sequences; no look at the bases."""
    import needletail

    path = Path(path)
    require_regular_file(path)
    seen: set[str] = set()
    ids: list[str] = []
    sequences: list[str] = []
    n_bases = 0
    record = 0
    first = 1
    try:
        # needletail (Rust) parses plain, gzip, bz2, xz and zstd FASTA, joins wrapped
        # lines and drops CR; it is several times faster than a Python line reader.
        for rec in needletail.parse_fastx_file(str(path)):
            record += 1
            if not rec.is_fasta():
                raise BadInputError(f"{path}: record {record} is FASTQ: not a FASTA file")
            contig_id = _contig_id(path, record, rec.id)
            if contig_id in seen:
                raise BadInputError(f"{path}: record {record}: duplicate contig id {contig_id!r}")
            seen.add(contig_id)
            sequence = rec.seq
            if not sequence:
                raise BadInputError(
                    f"{path}: record {record} ({contig_id!r}): empty sequence (length 0)"
                )
            ids.append(contig_id)
            sequences.append(sequence)
            n_bases += len(sequence)
            if n_bases >= batch_bases or len(ids) >= batch_contigs:
                yield RawBatch(first, ids, sequences)
                first, ids, sequences, n_bases = record + 1, [], [], 0
    except needletail.NeedletailError as exc:
        text = str(exc)
        if record == 0 and "empty" in text:
            raise BadInputError(f"{path}: no FASTA records (empty file)") from None
        where = f"after record {record}" if record else "at the start"
        raise BadInputError(f"{path}: not a FASTA file or damaged ({where}): {text}") from None
    if ids:
        yield RawBatch(first, ids, sequences)
    if record == 0:
        raise BadInputError(f"{path}: no FASTA records (empty file)")


def _contig_id(path: Path, record: int, header: str) -> str:
    # needletail decodes headers lossily: bytes that are not UTF-8 arrive as U+FFFD, and an
    # id holding them would no longer match the same contig in a label or abundance file.
    if "\ufffd" in header:
        raise BadInputError(f"{path}: record {record}: header is not UTF-8")
    parts = header.split(maxsplit=1)
    if not parts:
        raise BadInputError(f"{path}: record {record}: empty FASTA header (no contig id)")
    return parts[0]


def finish_batch(path: Path, raw: RawBatch) -> FastaBatch:
    """Join, check and count one batch (most of the work runs without the GIL)."""
    first, ids, sequences = raw.first_record, raw.ids, raw.sequences
    try:
        # One pass joins, counts tetramers and bases and says whether any case or letter
        # check is due.
        data, offsets, tetramers, base_counts, flags = join_and_count(sequences)
    except UnicodeEncodeError:
        bad = next(i for i, seq in enumerate(sequences) if not seq.isascii())
        raise BadInputError(
            f"{path}: record {first + bad} ({ids[bad]!r}): binary data or non-ASCII characters "
            "in the sequence"
        ) from None
    n_count = base_counts[:, INVALID]
    if flags & HAS_NON_LETTER:
        _raise_non_letter(path, first, ids, data, offsets, n_count)
    if flags & HAS_LOWER:
        data = data.upper()
    odd_letters = _odd_letters(data, int(n_count.sum()))
    acgt = base_counts[:, :4].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gc = ((base_counts[:, 1] + base_counts[:, 2]) / acgt).astype(np.float32)
    view = memoryview(data)
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    md5 = [hashlib.md5(view[s:e]).hexdigest() for s, e in bounds]
    return FastaBatch(first, ids, data, offsets, tetramers, gc, n_count, md5, odd_letters)


def _odd_letters(data: bytes, n_other: int) -> np.ndarray | None:
    """Counts by byte of the letters in ``data`` (upper case) that are not nucleotide letters.

    Only a batch whose non-A/C/G/T bases (counted already) reach the share that would make
    a file fail is looked at letter by letter: an assembly's batches, a few N at most, cost
    nothing, and a batch below that share cannot make a file mostly non-nucleotide.
    """
    if n_other == 0 or n_other < (1 - MIN_NUCLEOTIDE_SHARE) * len(data):
        return None
    odd = np.frombuffer(data.translate(None, _NUCLEOTIDE_LETTERS), dtype=np.uint8)
    return np.bincount(odd, minlength=256)


class LetterTally:
    """Adds up the batches of one file to refuse it, once read, if it is clearly not DNA.

    A protein FASTA (or RNA, U for T) parses as FASTA and would otherwise be ingested
    as a nucleotide assembly with nonsense TNF and GC.
    """

    def __init__(self) -> None:
        self.bases = 0
        self.odd = np.zeros(256, dtype=np.int64)

    def add(self, batch: FastaBatch) -> None:
        self.bases += int(batch.offsets[-1] - batch.offsets[0])
        if batch.odd_letters is not None:
            self.odd += batch.odd_letters

    def check(self, path: Path) -> None:
        """BadInputError if more than 1 - MIN_NUCLEOTIDE_SHARE of the letters are not DNA."""
        n_odd = int(self.odd.sum())
        if not self.bases or n_odd <= (1 - MIN_NUCLEOTIDE_SHARE) * self.bases:
            return
        order = np.argsort(-self.odd, kind="stable")
        common = [chr(b) for b in order[:_SHOW_LETTERS].tolist() if self.odd[b]]
        shown = ", ".join(repr(c) for c in common)
        if common[0] == "U" and self.odd[ord("U")] >= 0.9 * n_odd:
            guess = "an RNA FASTA (U for T)?"
        else:
            guess = "a protein FASTA?"
        raise BadInputError(
            f"{path}: mostly non-nucleotide letters ({n_odd / self.bases:.0%} of the bases are "
            f"not A/C/G/T, N or an IUPAC code, e.g. {shown}): {guess}"
        )


def _raise_non_letter(
    path: Path, first: int, ids: list[str], data: bytes, offsets: np.ndarray, n_count: np.ndarray
) -> None:
    view = memoryview(data)
    # A byte that is not a letter is not A/C/G/T either: only those contigs can hold it.
    for i in np.flatnonzero(n_count).tolist():
        odd = bytes(view[offsets[i] : offsets[i + 1]]).upper().translate(None, _LETTERS)
        if odd:
            raise BadInputError(
                f"{path}: record {first + i} ({ids[i]!r}): character {chr(odd[0])!r} in the "
                "sequence is not a nucleotide letter"
            )
    raise AssertionError("count_bytes flagged a non-letter byte that no contig holds")
