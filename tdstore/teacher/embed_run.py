"""Computing an embedding set: this worker's shards, resumable, with prefetch and caching.

Worker ``i`` of ``N`` takes shards ``i, i+N, ...``; each shard is read, tokenised (in a
background thread, while the device runs the previous shard), embedded, written and
marked done. Re-running the same command resumes::

    summary = embed(store, "GenomeOcean-500M", pooling="mean", shard="0/4")
    summary = embed(store, "kmer:4")            # no GPU needed
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tdstore import __version__
from tdstore.devices import check_device
from tdstore.errors import ConflictError, IncompleteError, ModelError, UsageError
from tdstore.schemas import declarations as S
from tdstore.store import Store, validate_name
from tdstore.tables import read_metadata
from tdstore.teacher.embed_cache import ContentCache
from tdstore.teacher.embed_store import (
    Recipe,
    open_or_create,
    read_marker,
    set_path,
    shard_checksum,
    shard_lock_key,
    shard_rows,
    verify_unchanged,
    write_marker,
)
from tdstore.teacher.engine import EmbedResult

log = logging.getLogger("tdstore")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/N"``; else SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE; else ``(0, 1)``.

    A SLURM array may start anywhere and step (``--array=2-16:2``): task IDs map to
    ``(ID - MIN) / STEP``, so every one of the COUNT tasks gets its own worker index and
    no shard is left to nobody.
    """
    env = dict(os.environ if env is None else env)
    if text:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text}: expected i/N, e.g. 0/4") from None
        where = f"--shard {text}"
    elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        index, count = _slurm_array_worker(env)
        where = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
    elif "RANK" in env and "WORLD_SIZE" in env:
        index, count = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
        where = "RANK/WORLD_SIZE"
    else:
        return 0, 1
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{where}: shard {index}/{count}, need 0 <= i < N")
    return index, count


def _env_int(env: dict[str, str], variable: str, default: int | None = None) -> int:
    """An integer from the environment; a bad one is a UsageError naming the variable."""
    value = env.get(variable, "").strip()
    if not value and default is not None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{variable}={env.get(variable, '')!r}: expected an integer") from None


def _slurm_array_worker(env: dict[str, str]) -> tuple[int, int]:
    """(worker index, workers) of a SLURM array task, for ``--array=MIN-MAX[:STEP]``."""
    task = _env_int(env, "SLURM_ARRAY_TASK_ID")
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    first = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
    step = _env_int(env, "SLURM_ARRAY_TASK_STEP", 1)
    last = _env_int(env, "SLURM_ARRAY_TASK_MAX", first + (count - 1) * step)
    if step < 1 or count < 1:
        raise UsageError(
            f"SLURM_ARRAY_TASK_STEP={step}, SLURM_ARRAY_TASK_COUNT={count}: expected both >= 1"
        )
    # A list (--array=1,4,5) has no constant step: some index would get no task.
    if (task - first) % step or first + (count - 1) * step != last:
        raise UsageError(
            f"SLURM_ARRAY_TASK_ID={task}: the array ({first}-{last}, step {step}, {count} "
            "tasks) is not one evenly stepped range; submit --array=0-N (or 0-N:STEP), "
            "or pass --shard i/N"
        )
    return (task - first) // step, count


class _Backend:
    """What a teacher must offer the shard loop."""

    kind: str
    label: str  # model name recorded in attrs
    hidden: int
    inputs: dict[str, Any]  # fingerprint inputs
    settings: dict[str, Any]  # recorded in attrs
    device: str = "cpu"
    model_path: str | None = None

    def recipe(self) -> Recipe:
        return Recipe(
            kind=self.kind,
            model=self.label,
            model_path=self.model_path,
            hidden=self.hidden,
            inputs=self.inputs,
            settings=self.settings,
        )

    def prepare(self, sequences: list[str]) -> Any:
        return sequences

    def ready(self) -> None:
        """Load what compute needs (kept out of the shards' timings)."""

    def compute(self, prepared: Any, on_tokens: Callable[[int], None]) -> EmbedResult:
        raise NotImplementedError


class _KmerBackend(_Backend):
    kind = "kmer"

    def __init__(self, k: int):
        from tdstore.teacher import kmer

        self.k = k
        self.label = f"kmer:{k}"
        self.hidden = kmer.n_columns(k)
        self.inputs = {"teacher": "kmer", "k": k}
        self.settings = {
            "pooling": "frequency",
            "window": None,
            "stride": None,
            "max_windows": None,
            "layer": None,
            "dtype": "fp32",
        }

    def compute(self, prepared: list[str], on_tokens: Callable[[int], None]) -> EmbedResult:
        from tdstore.teacher.kmer import kmer_matrix

        vectors = kmer_matrix(prepared, self.k)
        counts = np.asarray([max(0, len(s) - self.k + 1) for s in prepared], dtype=np.int64)
        on_tokens(int(counts.sum()))
        return EmbedResult(vectors, np.ones(len(prepared), np.int32), counts, counts)


class _ModelBackend(_Backend):
    kind = "model"

    def __init__(
        self,
        path: Path,
        *,
        device: str,
        dtype: str,
        pooling: str,
        window: int | None,
        stride: int | None,
        max_windows: int | None,
        layer: int,
        batch_tokens: int | None,
        trust_remote_code: bool,
    ):
        from tdstore.teacher.engine import POOLINGS
        from tdstore.teacher.models import inspect_model, resolve_device, resolve_dtype
        from tdstore.teacher.windows import resolve_plan

        if pooling not in POOLINGS:
            raise UsageError(f"--pooling {pooling}: expected mean or last")
        self.info = inspect_model(path, trust_remote_code=trust_remote_code)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.plan = resolve_plan(
            limit=self.info.limit,
            n_special=len(self.info.prefix) + len(self.info.suffix),
            window=window,
            stride=stride,
            max_windows=max_windows,
        )
        self.pooling, self.layer = pooling, layer
        self.trust_remote_code = trust_remote_code
        cuda = self.device.startswith("cuda")
        self.batch_tokens = batch_tokens or (65536 if cuda else 8192)
        self.label = path.resolve().name
        self.model_path = str(path.resolve())
        self.hidden = self.info.hidden
        window_tokens = self.plan.content + len(self.info.prefix) + len(self.info.suffix)
        self.settings = {
            "pooling": pooling,
            "window": window_tokens,
            "stride": self.plan.stride,
            "max_windows": max_windows,
            "layer": layer,
            "dtype": self.dtype,
        }
        self.inputs = {"teacher": "model", **self.info.identity, **self.settings}
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The model is loaded on first use: a worker with nothing to do never loads it."""
        if self._engine is None:
            from tdstore.teacher.engine import Engine
            from tdstore.teacher.models import load_model

            teacher = load_model(
                self.info,
                device=self.device,
                dtype=self.dtype,
                trust_remote_code=self.trust_remote_code,
            )
            self._engine = Engine(
                teacher,
                self.plan,
                pooling=self.pooling,
                layer=self.layer,
                batch_tokens=self.batch_tokens,
            )
        return self._engine

    def ready(self) -> None:
        self.engine  # noqa: B018 - loads the model

    def prepare(self, sequences: list[str]) -> Any:
        # Only the tokenizer: safe to run in the prefetch thread while the GPU works.
        from tdstore.teacher.engine import Engine

        return Engine.tokenize_with(self.info.tokenizer, sequences)

    def compute(self, prepared: Any, on_tokens: Callable[[int], None]) -> EmbedResult:
        return self.engine.embed_tokens(prepared, on_batch=on_tokens)


# Options only a model teacher uses (CLI spelling): given with kmer:K they would be ignored.
_MODEL_OPTIONS = {
    "pooling": "--pooling",
    "window": "--window",
    "stride": "--stride",
    "max_windows": "--max-windows",
    "layer": "--layer",
    "dtype": "--dtype",
    "batch_tokens": "--batch-tokens",
    "trust_remote_code": "--trust-remote-code",
}


def make_backend(model: str, **options: Any) -> _Backend:
    """The k-mer or model teacher; options left at None take the model's defaults."""
    from tdstore.teacher.kmer import parse_kmer_model

    k = parse_kmer_model(model)
    if k is not None:
        given = [
            flag
            for key, flag in _MODEL_OPTIONS.items()
            if options.get(key) is not None and options.get(key) is not False
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)}: only for a model directory, not --model {model} "
                "(k-mer frequencies have no pooling, windows, layers or batches); leave "
                f"{'it' if len(given) == 1 else 'them'} out"
            )
        return _KmerBackend(k)
    defaults = {"pooling": "mean", "layer": -1, "dtype": "auto"}
    resolved = {
        key: value if value is not None else defaults.get(key) for key, value in options.items()
    }
    return _ModelBackend(Path(model), **resolved)


def _check_counts(n_shards: int | None, max_shards: int | None, batch_tokens: int | None) -> None:
    # 0 or a negative count would be read as "the default" or as a slice from the end.
    for flag, value in (
        ("--n-shards", n_shards),
        ("--max-shards", max_shards),
        ("--batch-tokens", batch_tokens),
    ):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise UsageError(f"{flag} {value}: expected a positive whole number")


def read_sequences(store: Store, rows: np.ndarray) -> list[str]:
    """Sequences of ``rows`` (sorted), reading only the Parquet row groups that hold them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if len(rows) == 0:
        return []
    path = store.core_dir / "sequences.parquet"
    read_metadata(path, S.SEQUENCES)
    lo, hi = int(rows.min()), int(rows.max())
    wanted = {int(r): i for i, r in enumerate(rows.tolist())}
    out: list[str | None] = [None] * len(rows)
    with pq.ParquetFile(path) as handle:
        meta = handle.metadata
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(0).statistics
            if stats is not None and stats.has_min_max and (stats.max < lo or stats.min > hi):
                continue
            table = handle.read_row_group(g)
            row_col = table.column(0)
            mask = pc.is_in(row_col, value_set=pa.array(np.asarray(rows, dtype=np.int64)))
            picked = table.filter(mask)
            for r, seq in zip(
                picked.column(0).to_pylist(), picked.column(1).to_pylist(), strict=True
            ):
                out[wanted[r]] = seq
    missing = [int(rows[i]) for i, s in enumerate(out) if s is None]
    if missing:
        raise IncompleteError(f"{path}: no sequence for rows {missing[:5]}")
    return out  # type: ignore[return-value]


@dataclass
class _ShardWork:
    shard: int
    rows: tuple[int, int]
    unique: list[str]  # md5s of the shard, first occurrence order
    first_row: np.ndarray  # a row holding each unique md5
    hits: dict[str, tuple[np.ndarray, int]]
    compute: list[int]  # indexes into unique that must be computed
    prepared: Any = None
    bp: int = 0
    future: Future | None = field(default=None, repr=False)


@dataclass
class _Context:
    store: Store
    name: str
    path: Path
    attrs: dict[str, Any]
    backend: _Backend
    cache: ContentCache
    md5: np.ndarray
    lengths: np.ndarray
    worker: str
    computed: int = 0
    copied: int = 0
    tokens: int = 0
    shard_seconds: float = 0.0
    _arrays: tuple[Any, Any] | None = None

    def arrays(self) -> tuple[Any, Any]:
        """(vectors, n_windows), opened once per run."""
        import zarr

        if self._arrays is None:
            self._arrays = (
                zarr.open_array(str(self.path / "vectors"), mode="r+"),
                zarr.open_array(str(self.path / "n_windows"), mode="r+"),
            )
        return self._arrays


def _plan_shard(ctx: _Context, shard: int) -> _ShardWork:
    a, b = shard_rows(ctx.attrs, shard)
    md5s = ctx.md5[a:b].tolist()
    unique = list(dict.fromkeys(md5s))
    first = {}
    for offset, m in enumerate(md5s):
        first.setdefault(m, a + offset)
    hits = ctx.cache.lookup(unique, ctx.md5)
    compute = [i for i, m in enumerate(unique) if m not in hits]
    rows = np.asarray([first[m] for m in unique], dtype=np.int64)
    return _ShardWork(shard, (a, b), unique, rows, hits, compute, bp=int(ctx.lengths[a:b].sum()))


def _prepare(ctx: _Context, work: _ShardWork) -> Any:
    sequences = read_sequences(ctx.store, work.first_row[work.compute])
    return ctx.backend.prepare(sequences)


def _run_shard(ctx: _Context, work: _ShardWork, progress: Any) -> dict[str, Any]:
    if work.compute:
        ctx.backend.ready()
    started = time.monotonic()
    prepared = work.future.result() if work.future is not None else _prepare(ctx, work)
    a, b = work.rows
    hidden = int(ctx.attrs["hidden"])
    unique_vectors = np.zeros((len(work.unique), hidden), dtype=np.float16)
    unique_windows = np.zeros(len(work.unique), dtype=np.int32)
    for i, md5 in enumerate(work.unique):
        if md5 in work.hits:
            unique_vectors[i], unique_windows[i] = work.hits[md5]
    computed_bp = int(ctx.lengths[work.first_row[work.compute]].sum())
    # Batches report tokens; the bar counts bp: advance by the shard's bp per token.
    ratio = computed_bp / max(1, sum(len(p) for p in prepared)) if work.compute else 0.0
    advanced = [0.0]

    def on_tokens(n: int) -> None:
        step = min(n * ratio, work.bp - advanced[0])
        advanced[0] += step
        progress.advance(step, tokens=n)

    waited = time.monotonic() - started
    result = ctx.backend.compute(prepared, on_tokens) if work.compute else None
    computed_at = time.monotonic()
    tokens = covered = windows = 0
    if result is not None:
        _range_check(result.vectors, ctx, work)
        unique_vectors[work.compute] = result.vectors.astype(np.float16)
        unique_windows[work.compute] = result.n_windows
        tokens, covered = int(result.n_tokens.sum()), int(result.covered.sum())
        windows = int(result.n_windows.sum())
    position = {m: i for i, m in enumerate(work.unique)}
    index = np.asarray([position[m] for m in ctx.md5[a:b].tolist()], dtype=np.int64)
    vectors, n_windows = unique_vectors[index], unique_windows[index]
    verify_unchanged(ctx.path, ctx.attrs, work.shard)
    vector_array, window_array = ctx.arrays()
    vector_array[a:b] = vectors
    window_array[a:b] = n_windows
    # The marker promises the data: get the chunks onto disk before publishing it.
    _fsync_chunks(ctx.path, a, b, int(ctx.attrs["rows_per_chunk"]))
    n_copied = (b - a) - len(work.compute)
    marker = {
        "shard": work.shard,
        "rows": [a, b],
        "fingerprint": ctx.attrs["fingerprint"],
        "sha256": shard_checksum(vectors, n_windows),
        "computed": len(work.compute),
        "copied": n_copied,
        "unique": len(work.unique),
        "tokens": tokens,
        "covered_tokens": covered,
        "windows": windows,
        "bp": computed_bp,
        "seconds": round(time.monotonic() - started, 3),
        # Where the time went: waiting for the prefetch, the forward pass, the rest (writes).
        "wait_seconds": round(waited, 3),
        "compute_seconds": round(computed_at - started - waited, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "worker": ctx.worker,
        "host": socket.gethostname(),
        "device": ctx.backend.device,
        "tdstore_version": __version__,
    }
    verify_unchanged(ctx.path, ctx.attrs, work.shard)
    write_marker(ctx.path, work.shard, marker)
    ctx.cache.add(work.unique, unique_vectors, unique_windows)
    ctx.computed += len(work.compute)
    ctx.copied += n_copied
    ctx.tokens += tokens
    ctx.shard_seconds += marker["seconds"]
    progress.advance(work.bp - advanced[0], contigs=b - a)
    return marker


def _fsync_chunks(path: Path, a: int, b: int, per_chunk: int) -> None:
    # Zarr v3 default chunk keys: <array>/c/<row chunk>[/<column chunk>].
    for chunk in range(a // per_chunk, -(-b // per_chunk)):
        for file in (
            path / "vectors" / "c" / str(chunk) / "0",
            path / "n_windows" / "c" / str(chunk),
        ):
            if file.exists():  # a chunk equal to the fill value is not written
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _range_check(vectors: np.ndarray, ctx: _Context, work: _ShardWork) -> None:
    # float16 on disk: refuse values it cannot hold rather than store inf silently.
    bad = ~np.isfinite(vectors) | (np.abs(vectors) > FLOAT16_MAX)
    if bad.any():
        i = int(np.nonzero(bad.any(axis=1))[0][0])
        row = int(work.first_row[work.compute][i])
        value = vectors[i][bad[i]][0]
        contig = ctx.store.contig_ids()[row]
        raise ModelError(
            f"embedding of contig {contig} (row {row}) has value {value}, outside float16 "
            f"range (|x| <= {FLOAT16_MAX:g}); try another --layer or --pooling. Finished "
            "shards are kept."
        )


def embed(
    store: Store,
    model: str,
    *,
    name: str | None = None,
    shard: str | None = None,
    device: str = "auto",
    batch_tokens: int | None = None,
    pooling: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    max_windows: int | None = None,
    layer: int | None = None,
    dtype: str | None = None,
    cache: Path | str | None = None,
    trust_remote_code: bool = False,
    n_shards: int | None = None,
    max_shards: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Compute (or resume) embedding set ``name`` for this worker's shards; returns a summary.

    Worker ``i`` of ``N`` (``shard="i/N"``, or from SLURM / torchrun variables) takes
    shards ``i, i+N, ...``; finished shards are skipped, so re-running resumes.
    ``max_shards`` stops after that many shards (for time-limited jobs). Model options
    left at None take the model's defaults (mean pooling, last layer, auto dtype); given
    with ``kmer:K`` they are refused, since they would change nothing.
    """
    from tdstore.progress import Progress

    started = time.monotonic()
    _check_counts(n_shards, max_shards, batch_tokens)
    index, count = parse_shard(shard)
    check_device(device, allow_auto=True)  # before the model loads, whatever the backend
    store.core  # noqa: B018 - clear error if the store has no contigs yet
    backend = make_backend(
        model,
        device=device,
        dtype=dtype,
        pooling=pooling,
        window=window,
        stride=stride,
        max_windows=max_windows,
        layer=layer,
        batch_tokens=batch_tokens,
        trust_remote_code=trust_remote_code,
    )
    if name is None:
        name = (
            f"kmer{backend.k}"
            if isinstance(backend, _KmerBackend)
            else (f"{backend.label}-{backend.settings['pooling']}")
        )
    validate_name(name, "embedding set")
    if not set_path(store, name).exists():
        # A new set will be computed: load the model first, so that weights which do not
        # fit their config (exit 7) leave no empty set behind. Resumed or up-to-date sets
        # load it only when a shard needs computing.
        backend.ready()
    attrs = open_or_create(store, name, backend.recipe(), n_shards=n_shards, workers=count)
    path = set_path(store, name)
    log.info(
        "embed %s: tdstore %s, worker %d/%d, model %s, settings %s, fingerprint %s",
        name,
        __version__,
        index,
        count,
        backend.label,
        backend.settings,
        attrs["fingerprint"],
    )
    mine = list(range(index, int(attrs["n_shards"]), count))
    pending = [s for s in mine if read_marker(path, s, attrs) is None]
    summary: dict[str, Any] = {
        "name": name,
        "fingerprint": attrs["fingerprint"],
        "worker": f"{index}/{count}",
        "shards_mine": len(mine),
        "shards_done": 0,
        "computed": 0,
        "copied": 0,
        "tokens": 0,
    }
    if not pending:
        summary.update(status="up to date", seconds=round(time.monotonic() - started, 3))
        return summary
    if max_shards is not None:
        pending = pending[:max_shards]
    contigs = store.contigs(columns=["row", "length", "seq_md5", "kept"])
    ctx = _Context(
        store=store,
        name=name,
        path=path,
        attrs=attrs,
        backend=backend,
        cache=ContentCache(store, name, attrs, Path(cache) if cache is not None else None),
        md5=np.asarray(contigs.column("seq_md5").to_pylist(), dtype=object),
        lengths=contigs.column("length").to_numpy(),
        worker=f"{index}/{count}",
    )
    total_bp = float(sum(int(ctx.lengths[slice(*shard_rows(attrs, s))].sum()) for s in pending))
    done_shards: list[int] = []
    with (
        Progress(
            f"embed {name}",
            total=total_bp,
            unit="bp",
            enabled=show_progress,
            status=lambda: _status_line(ctx, done_shards, pending),
        ) as progress,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdstore-prefetch") as pool,
    ):
        held: dict[int, Callable[[], None]] = {}  # shard locks to release, whatever happens
        try:
            claimed = _claim_next(ctx, pending, 0, pool)
            while claimed is not None:
                work, position, release = claimed
                held[work.shard] = release
                # Read and tokenise the next shard while this one runs on the device.
                following = _claim_next(ctx, pending, position + 1, pool)
                if following is not None:
                    held[following[0].shard] = following[2]
                _run_shard(ctx, work, progress)
                done_shards.append(work.shard)
                held.pop(work.shard)()
                claimed = following
        finally:
            for release in held.values():
                release()
    left = [s for s in mine if read_marker(path, s, attrs) is None]
    summary.update(
        status="done" if not left else "partial",
        shards_done=len(done_shards),
        shards_left=len(left),
        pending=left,
        computed=ctx.computed,
        copied=ctx.copied,
        tokens=ctx.tokens,
        shard_seconds=round(ctx.shard_seconds, 3),
        seconds=round(time.monotonic() - started, 3),
    )
    return summary


def _claim_next(
    ctx: _Context, pending: list[int], start: int, pool: ThreadPoolExecutor
) -> tuple[_ShardWork, int, Callable[[], None]] | None:
    """Lock the next pending shard no other worker holds and start preparing it."""
    for position in range(start, len(pending)):
        shard = pending[position]
        lock = ctx.store.lock(shard_lock_key(ctx.name, shard))
        try:
            lock.__enter__()
        except ConflictError:
            log.info("shard %d is being computed by another process; skipped", shard)
            continue

        def release(lock: Any = lock) -> None:
            lock.__exit__(None, None, None)

        try:
            # Under the shard lock the set cannot be replaced (a replacement takes every
            # shard lock), so a set found unchanged here stays so until the lock is freed.
            verify_unchanged(ctx.path, ctx.attrs, shard)
            if read_marker(ctx.path, shard, ctx.attrs) is not None:  # finished meanwhile
                release()
                continue
            work = _plan_shard(ctx, shard)
        except BaseException:
            release()
            raise
        work.future = pool.submit(_prepare, ctx, work)
        return work, position, release
    return None


def _status_line(ctx: _Context, done: list[int], pending: list[int]) -> str:
    parts = [
        f"shards {len(done)}/{len(pending)}",
        f"computed {ctx.computed}",
        f"copied {ctx.copied}",
    ]
    if ctx.backend.device.startswith("cuda"):
        import torch

        parts.append(
            f"GPU mem {torch.cuda.max_memory_allocated(ctx.backend.device) / 2**30:.1f} GiB"
        )
    return ", ".join(parts)
