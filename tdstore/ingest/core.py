"""``tdstore ingest``: contigs, sequences, TNF and abundances into a store's ``core/``.

Streams the FASTA in batches (bounded memory), writes everything into a staging
directory inside the store and publishes it with one directory rename::

    store = tdstore.init("gut.tdstore")
    summary = ingest(store, "contigs.fna.gz", abundance="abundance.tsv", min_length=2000)
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tdstore import __version__
from tdstore.atomic import TMP_MARK, write_json_atomic
from tdstore.errors import BadInputError, ConflictError, UsageError
from tdstore.features import tnf as tnf_mod
from tdstore.features.normalise import NormalisationStats
from tdstore.ingest.abundance import AbundanceTable, read_abundance
from tdstore.ingest.fasta import (
    FastaBatch,
    LetterTally,
    file_md5,
    finish_batch,
    read_raw_batches,
    sample_of,
)
from tdstore.ingest.files import require_regular_file
from tdstore.progress import Progress
from tdstore.schemas import declarations as S
from tdstore.store import CORE_DIR, Store, refhash_of
from tdstore.tables import TableWriter, chunk_rows

STAGING_PREFIX = f"{CORE_DIR}{TMP_MARK}"
_DERIVED = ("labels", "embeddings", "soft_labels", "subsets", "runs")
_ASIDE_PREFIX = f"{STAGING_PREFIX}old-"  # the replaced core during an --overwrite swap
_SHOW_MISSING = 5


def ingest(
    store: Store | Path | str,
    fasta: Path | str,
    *,
    abundance: Path | str | None = None,
    min_length: int = 2000,
    sample: str | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ingest ``fasta`` (and an abundance TSV) into ``store``; returns a summary dict.

    ``store`` may be a path: the store is created if needed. A store holds one assembly:
    with ``overwrite`` an existing core is replaced, but only while nothing derived from
    it (label sets, embeddings, soft labels, subsets, runs) exists, since those record
    the old contig order.
    """
    if min_length < 1:
        raise UsageError(f"--min-length must be at least 1, got {min_length}")
    # Before a store is created or locked: a missing file, a directory or a pipe.
    for given in (fasta, abundance):
        if given is not None:
            require_regular_file(Path(given))
    if not isinstance(store, Store):
        from tdstore.store import init

        path = Path(store)
        created = not path.exists()
        store = init(path, exist_ok=True)
        try:
            return ingest(
                store,
                fasta,
                abundance=abundance,
                min_length=min_length,
                sample=sample,
                show_progress=show_progress,
                overwrite=overwrite,
            )
        except BaseException:
            if created:
                _remove_empty_store(path)
            raise
    started = time.monotonic()
    fasta = Path(fasta)
    with store.lock("ingest"):
        _remove_stale_staging(store)
        if store.is_ingested:
            _check_overwrite(store, overwrite)
        staging = store.path / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            with tnf_mod.single_threaded_blas():
                summary = _write_core(
                    store,
                    staging,
                    fasta,
                    abundance,
                    min_length,
                    sample,
                    show_progress=show_progress,
                )
            _publish(staging, store.core_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for cached in ("core", "_contig_ids", "row_of"):  # the Store object saw the old core
            store.__dict__.pop(cached, None)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


def _remove_empty_store(path: Path) -> None:
    """Undo the ``init`` of a store this failed ingest created: it holds nothing else."""
    leftovers = [p for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"]
    if all(p.parent.name == ".locks" for p in leftovers):
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_staging(store: Store) -> None:
    # Only called under the ingest lock: no live ingest owns these directories.
    replaced = sorted(store.path.glob(f"{_ASIDE_PREFIX}*"))
    if not store.core_dir.exists() and len(replaced) == 1:
        # An --overwrite was killed between its two renames: put the old core back.
        os.replace(replaced[0], store.core_dir)
    for path in store.path.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def _check_overwrite(store: Store, overwrite: bool) -> None:
    if not overwrite:
        raise ConflictError(
            f"{store.path}: already ingested ({store.n_contigs:,} contigs); a store holds one "
            "assembly: use a new store, or --overwrite while nothing else was added"
        )
    derived = [
        kind
        for kind in _DERIVED
        if store.object_dir(kind).exists() and any(store.object_dir(kind).iterdir())
    ]
    if derived:
        raise ConflictError(
            f"{store.path}: refusing to overwrite the contigs: {', '.join(derived)} were made "
            "from them; use a new store"
        )


def _publish(staging: Path, target: Path) -> None:
    from tdstore.atomic import fsync_dir, fsync_path

    fsync_path(staging)
    if target.exists():
        # --overwrite: move the old core aside first so the swap is two renames.
        aside = target.with_name(f"{_ASIDE_PREFIX}{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, target)
    fsync_dir(target.parent)


class _Background:
    """Worker threads for one ingest: a prefetching batch producer and side jobs.

    On exit (normal or not) the workers are told to stop and are joined, so an error
    in the consumer never leaves a thread blocked on a full queue.
    """

    _DONE = object()

    def __init__(self, depth: int = 2):
        self.stop = threading.Event()
        self.depth = depth
        self._threads: list[threading.Thread] = []
        self._pool: Any = None

    def __enter__(self) -> _Background:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdstore-ingest")
        return self

    def submit(self, fn: Any, *args: Any) -> Any:
        return self._pool.submit(fn, *args)

    def prefetch(self, iterator: Iterator[Any]) -> Iterator[Any]:
        items: queue.Queue[Any] = queue.Queue(maxsize=self.depth)

        def put(entry: tuple[Any, BaseException | None]) -> bool:
            # Never block for good: the consumer may have stopped listening.
            while not self.stop.is_set():
                try:
                    items.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for item in iterator:
                    if not put((item, None)):
                        return
                put((self._DONE, None))
            except BaseException as exc:  # forwarded to the consumer
                put((self._DONE, exc))

        # Started now, not on the first next(): the stage works while the caller does.
        thread = threading.Thread(target=produce, name="tdstore-ingest-read", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self._consume(items)

    def _consume(self, items: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            try:
                item, error = items.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():  # a stage downstream failed: nobody is listening
                    return
                continue
            if error is not None:
                raise error
            if item is self._DONE:
                return
            yield item

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()
        self._pool.shutdown(wait=True)


class _SerialWorker:
    """Runs jobs in submission order on one thread; at most ``depth`` pending (bounded memory).

    A job's error is raised in the submitting thread at the next ``submit`` or ``drain``.
    On exit the queue is cancelled and the thread joined: nothing runs on after the block.
    """

    def __init__(self, name: str, depth: int = 2):
        self.name = name
        self.depth = depth
        self._pending: deque[Any] = deque()
        self._pool: Any = None

    def __enter__(self) -> _SerialWorker:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        return self

    def submit(self, fn: Any, *args: Any) -> None:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _ChunkedAppender:
    """Appends rows to a growing Zarr array, writing whole chunks only (no rewrites)."""

    def __init__(self, array: Any, chunk: int):
        self.array = array
        self.chunk = chunk
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.n_written = 0

    @classmethod
    def create(cls, group: Any, name: str, n_cols: int) -> _ChunkedAppender:
        """An empty (0, n_cols) float32 array; its attributes are set once complete."""
        chunk = chunk_rows(max(n_cols, 1), 4)
        array = group.create_array(
            name, shape=(0, n_cols), chunks=(chunk, max(n_cols, 1)), dtype="float32"
        )
        return cls(array, chunk)

    def append(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= self.chunk:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        if not self.n_pending:
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        take = len(block) if final else (len(block) // self.chunk) * self.chunk
        start = self.n_written
        self.array.resize((start + take, self.array.shape[1]))
        self.array[start : start + take] = block[:take]
        self.n_written += take
        rest = block[take:]
        self.pending = [rest] if len(rest) else []
        self.n_pending = len(rest)

    def close(self) -> None:
        self._flush(final=True)


class _Moments:
    """Column mean and population std over batches (Chan et al.'s pairwise update)."""

    def __init__(self, n_cols: int):
        self.n = 0
        self.mean = np.zeros(n_cols)
        self.m2 = np.zeros(n_cols)

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        rows = np.asarray(rows, dtype=np.float64)
        n_b = len(rows)
        mean_b = rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n) if self.n else np.zeros_like(self.m2)


class _AbundanceAligner:
    """Picks the abundance rows of kept contigs, in FASTA order, and keeps the books."""

    def __init__(self, table: AbundanceTable | None):
        self.table = table
        self.n_samples = len(table.samples) if table else 0
        self.used = np.zeros(len(table.ids) if table else 0, dtype=bool)
        self.kept_rows: list[np.ndarray] = []
        self.missing: list[str] = []
        self.n_missing = 0
        self.n_filtered_rows = 0

    def rows(self, batch: FastaBatch, kept: np.ndarray) -> np.ndarray | None:
        """The batch's kept contigs' rows (None once any kept contig had no row)."""
        if self.table is None:
            return None
        index = self.table.index
        kept_ids = [batch.ids[i] for i in np.flatnonzero(kept).tolist()]
        where = np.array([index.get(cid, -1) for cid in kept_ids], dtype=np.int64)
        absent = np.flatnonzero(where < 0)
        self.n_missing += len(absent)
        self.missing.extend(kept_ids[i] for i in absent[: _SHOW_MISSING - len(self.missing)])
        for i in np.flatnonzero(~kept).tolist():
            j = index.get(batch.ids[i])
            if j is not None:
                self.n_filtered_rows += 1
                self.used[j] = True
        if self.n_missing:
            return None
        self.used[where] = True
        rows = self.table.values[where]
        self.kept_rows.append(rows)
        return rows

    def check_complete(self) -> None:
        if self.n_missing and self.table is not None:
            raise BadInputError(
                f"{self.table.path}: {self.n_missing} kept contig(s) have no abundance row, "
                f"e.g. {', '.join(self.missing)}"
            )

    def matrix(self, n_kept: int) -> np.ndarray:
        if not self.kept_rows:
            return np.zeros((n_kept, self.n_samples), dtype=np.float32)
        return np.concatenate(self.kept_rows)

    def report(self) -> dict[str, Any]:
        unknown = np.flatnonzero(~self.used)
        return {
            "rows": len(self.used),
            "rows_unknown_contig": len(unknown),
            "rows_filtered_contig": self.n_filtered_rows,
            "unknown_examples": [self.table.ids[j] for j in unknown[:_SHOW_MISSING]]
            if self.table
            else [],
        }


def _write_core(
    store: Store,
    staging: Path,
    fasta: Path,
    abundance: Path | str | None,
    min_length: int,
    sample: str | None,
    *,
    show_progress: bool,
) -> dict[str, Any]:
    import zarr

    group = zarr.open_group(str(staging / "features.zarr"), mode="w", zarr_format=3)
    tnf_out = _ChunkedAppender.create(group, "tnf", tnf_mod.N_TNF)
    moments = _Moments(tnf_mod.N_TNF)
    kept_ids: list[str] = []
    n_filtered = n_bases = 0
    n_with_bases = 0  # kept contigs with at least one A/C/G/T (all-N assemblies are refused)
    letters = LetterTally()  # protein (or RNA) FASTA files are refused
    samples_seen: set[str] = set()
    total = fasta.stat().st_size if fasta.is_file() and not _compressed(fasta) else None

    with (
        _Background() as background,
        Progress("ingest", total=total, unit="bp", enabled=show_progress) as bar,
        # Not fsynced here: _publish flushes the whole staging directory once.
        TableWriter(
            staging / "contigs.parquet",
            S.CONTIGS,
            metadata={"min_length": min_length},
            durable=False,
        ) as contigs_out,
        TableWriter(
            staging / "sequences.parquet", S.SEQUENCES, options=_SEQUENCE_OPTIONS, durable=False
        ) as seqs_out,
        _SerialWorker("tdstore-ingest-write") as seq_writer,
    ):
        # A pipeline of threads: parsing; counting and hashing; this thread (tables,
        # TNF, Zarr); compressing and writing the sequences; the input's md5. Counting,
        # hashing, zstd and numpy release the GIL, so the stages share both cores.
        fasta_md5 = background.submit(file_md5, fasta, background.stop) if fasta.is_file() else None
        raw_batches = background.prefetch(read_raw_batches(fasta))
        batches = background.prefetch(finish_batch(fasta, raw) for raw in raw_batches)
        # The abundance table is read while the pipeline parses the first batches.
        table = read_abundance(abundance) if abundance is not None else None
        aligner = _AbundanceAligner(table)
        ab_out = _ChunkedAppender.create(group, "abundance", aligner.n_samples)
        for batch in batches:
            lengths = batch.lengths
            kept = lengths >= min_length
            kept_idx = np.flatnonzero(kept)
            first_row = len(kept_ids)
            rows = np.full(len(batch), -1, dtype=np.int64)
            rows[kept_idx] = np.arange(first_row, first_row + len(kept_idx))
            samples = [sample or sample_of(cid) for cid in batch.ids]
            samples_seen.update(s for s in samples if s)
            contigs_out.write(_contig_rows(batch, rows, kept, samples))
            kept_ids.extend(batch.ids[i] for i in kept_idx.tolist())
            n_filtered += len(batch) - len(kept_idx)
            n_bases += int(lengths[kept_idx].sum())
            n_with_bases += int((batch.n_count[kept_idx] < lengths[kept_idx]).sum())
            letters.add(batch)
            if len(kept_idx):
                seq_writer.submit(_write_sequences, seqs_out, batch, kept_idx, first_row)
                tnf = tnf_mod.project(batch.tetramers[kept_idx])
                tnf_out.append(tnf)
                moments.add(tnf)
            abundance_rows = aligner.rows(batch, kept)
            if abundance_rows is not None:
                ab_out.append(abundance_rows)
            bar.advance(int(lengths.sum()), contigs=len(batch))

        seq_writer.drain()
        letters.check(fasta)  # first: a protein file's records are short and all filtered
        _check_contents(fasta, kept_ids, n_filtered, n_with_bases, min_length)
        aligner.check_complete()
        if table is None:
            ab_out.append(np.zeros((len(kept_ids), 0), dtype=np.float32))
        tnf_out.close()
        ab_out.close()
        refhash = refhash_of(kept_ids)
        tnf_out.array.attrs.update(S.TNF.attrs(refhash=refhash))
        samples_names = list(table.samples) if table else []
        ab_out.array.attrs.update(S.ABUNDANCE.attrs(refhash=refhash, samples=samples_names))

    sources: dict[str, Any] = {
        "fasta": {
            "path": str(fasta.resolve()),
            "size": fasta.stat().st_size,
            "md5": fasta_md5.result() if fasta_md5 else None,
        }
    }
    if table is not None:
        sources["abundance"] = {
            "path": str(table.path.resolve()),
            "size": table.size,
            "md5": table.md5,
        }
    summary = {
        "refhash": refhash,
        "n_contigs": len(kept_ids),
        "n_filtered": n_filtered,
        "n_bases": n_bases,
        "min_length": min_length,
        "samples": samples_names,
        "contig_samples": sorted(samples_seen),
        "abundance_rows": aligner.report(),
    }
    stats = _normalisation(moments, aligner.matrix(len(kept_ids)))
    write_json_atomic(
        staging / "core.json",
        S.CORE.stamp(
            {
                **summary,
                "sources": sources,
                "normalisation": stats.to_dict(),
                "tdstore_version": __version__,
                "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ),
    )
    return {
        "store": str(store.path),
        "contigs": len(kept_ids),
        "filtered": n_filtered,
        "bases": n_bases,
        **summary,
    }


def _check_contents(
    fasta: Path, kept_ids: list[str], n_filtered: int, n_with_bases: int, min_length: int
) -> None:
    if not kept_ids:
        raise BadInputError(
            f"{fasta}: no contig is at least {min_length} bp long "
            f"({n_filtered} contigs, all filtered)"
        )
    if not n_with_bases:
        raise BadInputError(
            f"{fasta}: every kept contig is only N (no A/C/G/T base), e.g. contig "
            f"{kept_ids[0]!r}; not a nucleotide assembly?"
        )


def _compressed(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b" or path.suffix in {".gz", ".bz2", ".xz", ".zst"}


def _contig_rows(
    batch: FastaBatch, rows: np.ndarray, kept: np.ndarray, samples: list[str | None]
) -> pa.Table:
    return pa.table(
        {
            "row": pa.array(rows, mask=~kept),
            "contig_id": pa.array(batch.ids, type=pa.string()),
            "sample": pa.array(samples, type=pa.string()),
            "length": pa.array(batch.lengths),
            "gc": pa.array(batch.gc, from_pandas=True),  # NaN (no A/C/G/T) -> null
            "n_count": pa.array(batch.n_count),
            "seq_md5": pa.array(batch.md5, type=pa.string()),
            "kept": pa.array(kept),
        }
    )


# Sequences are long, distinct strings: a dictionary never pays and min/max statistics
# would copy whole sequences into the footer; the row column keeps both (row-group pruning).
_SEQUENCE_OPTIONS = {"use_dictionary": ["row"], "write_statistics": ["row"]}


def _write_sequences(
    out: TableWriter, batch: FastaBatch, kept_idx: np.ndarray, first_row: int
) -> None:
    out.write(_sequence_rows(batch, kept_idx, first_row))


def _sequence_rows(batch: FastaBatch, kept_idx: np.ndarray, first_row: int) -> pa.Table:
    if len(kept_idx) == len(batch):
        data, offsets = batch.data, batch.offsets
    else:
        starts, ends = batch.offsets[kept_idx], batch.offsets[kept_idx + 1]
        data = b"".join(
            batch.data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
        )
        offsets = np.zeros(len(kept_idx) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
    # Zero-copy: the batch buffer becomes the Arrow string data (ASCII, hence valid UTF-8).
    sequences = pa.LargeStringArray.from_buffers(
        len(kept_idx), pa.py_buffer(offsets), pa.py_buffer(data)
    )
    rows = pa.array(np.arange(first_row, first_row + len(kept_idx), dtype=np.int64))
    return pa.table({"row": rows, "sequence": sequences})


def _normalisation(moments: _Moments, abundance: np.ndarray) -> NormalisationStats:
    from dataclasses import replace

    # Abundance statistics need the column sums before the log totals: the kept
    # abundance matrix is small (N x K), so fit it exactly; TNF comes from running moments.
    stats = NormalisationStats.fit(np.zeros((len(abundance), 0)), abundance)
    return replace(
        stats,
        tnf_mean=tuple(float(x) for x in moments.mean),
        tnf_std=tuple(float(x) for x in moments.std),
    )
