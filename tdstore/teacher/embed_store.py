"""Embedding sets on disk: ``embeddings/<name>.zarr``, computed shard by shard, resumable.

Layout of one set (a Zarr v3 group)::

    embeddings/<name>.zarr/zarr.json        group attrs["tdstore"]: fingerprint, model, pooling,
                                            window, stride, layer, dtype, shard layout, refhash
    embeddings/<name>.zarr/vectors          N x hidden float16 (pooled in float32)
    embeddings/<name>.zarr/n_windows        N int32 (windows per contig; 1 for k-mers)
    embeddings/<name>.zarr/shards/<i>/zarr.json
                                            completion marker of shard i (a Zarr group whose
                                            attributes hold rows, sha256, tokens, seconds)

Shards are contiguous row ranges aligned to the chunk grid, so two workers never write
the same chunk; a shard counts as done only when its marker exists (published by an
atomic rename after its chunks are written). Readers use::

    vectors, attrs = load_embeddings(store, "GenomeOcean-500M-mean")   # float32 N x hidden
    vectors, _ = load_embeddings(store, "kmer4", rows=np.array([0, 5, 9]))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
from tdstore.atomic import atomic_path, write_json_atomic
from tdstore.errors import (
    ConflictError,
    IncompleteError,
    ModelError,
    SchemaError,
    TdstoreError,
    UsageError,
)
from tdstore.schemas import declarations as S
from tdstore.store import Store, validate_name
from tdstore.tables import chunk_rows, read_metadata
from tdstore.teacher.engine import EmbedResult

log = logging.getLogger("tdstore")

SUFFIX = ".zarr"
# Bump when the same inputs would give different numbers (pooling or windowing code).
ENGINE_VERSION = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAX_SHARD_ROWS = 16384  # bounds a shard's memory: rows x hidden x 8 bytes while combining
MIN_SHARDS = 64


# ----- naming, layout, fingerprint ----------------------------------------------------------
def list_names(store: Store) -> list[str]:
    return store.list_objects("embeddings", SUFFIX)


def set_path(store: Store, name: str) -> Path:
    return store.named_path("embeddings", name, SUFFIX)


def fingerprint_of(inputs: dict[str, Any]) -> str:
    """sha256 over what changes the numbers (never batch size, paths, devices or times)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def shard_layout(
    n_rows: int, hidden: int, n_shards: int | None = None, workers: int = 1
) -> tuple[int, list[int]]:
    """(rows per chunk, shard start rows + end) with shard boundaries on chunk boundaries.

    By default at least 64 shards (and at least one per worker), at most 16384 rows per
    shard; chunks of about 2 MiB, smaller when needed so every shard gets a chunk.
    """
    wanted = n_shards or max(MIN_SHARDS, math.ceil(n_rows / MAX_SHARD_ROWS), workers)
    per_chunk = min(chunk_rows(hidden, 2), max(1, math.ceil(n_rows / wanted)))
    n_chunks = max(1, math.ceil(n_rows / per_chunk))
    n = min(wanted, n_chunks)
    starts = [min(n_rows, (s * n_chunks // n) * per_chunk) for s in range(n)] + [n_rows]
    return per_chunk, starts


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/N"``; else SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE; else ``(0, 1)``."""
    env = dict(os.environ if env is None else env)
    if text:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text}: expected i/N, e.g. 0/4") from None
    elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    elif "RANK" in env and "WORLD_SIZE" in env:
        index, count = int(env["RANK"]), int(env["WORLD_SIZE"])
    else:
        return 0, 1
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"shard {index}/{count}: need 0 <= i < N")
    return index, count


# ----- teachers ------------------------------------------------------------------------------
class _Backend:
    """What a teacher must offer the shard loop."""

    kind: str
    label: str  # model name recorded in attrs
    hidden: int
    inputs: dict[str, Any]  # fingerprint inputs
    settings: dict[str, Any]  # recorded in attrs
    device: str = "cpu"

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


def make_backend(model: str, **options: Any) -> _Backend:
    from tdstore.teacher.kmer import parse_kmer_model

    k = parse_kmer_model(model)
    if k is not None:
        return _KmerBackend(k)
    return _ModelBackend(Path(model), **options)


# ----- opening, creating -----------------------------------------------------------------------
def _group(path: Path, mode: str = "r") -> Any:
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise SchemaError(f"{path}: not a readable Zarr group ({exc})") from None


def read_attrs(store: Store, name: str) -> dict[str, Any]:
    """The set's provenance (``attrs['tdstore']``), schema-checked."""
    from tdstore.schemas import check_metadata

    path = set_path(store, name)
    if not path.exists():
        known = ", ".join(list_names(store)) or "none"
        raise IncompleteError(f"{store.path}: no embedding set {name!r} (known: {known})")
    attrs = dict(_group(path).attrs.get("tdstore") or {})
    check_metadata(str(path), S.EMBEDDINGS.name, attrs.get("schema"), attrs.get("schema_version"))
    return attrs


def _create(
    store: Store,
    name: str,
    backend: _Backend,
    fingerprint: str,
    n_shards: int | None,
    workers: int,
) -> dict[str, Any]:
    import zarr

    n_rows = store.n_contigs
    per_chunk, starts = shard_layout(n_rows, backend.hidden, n_shards, workers)
    attrs = S.EMBEDDINGS.attrs(
        name=name,
        teacher=backend.kind,
        model=backend.label,
        model_path=str(backend.info.path.resolve()) if isinstance(backend, _ModelBackend) else None,
        hidden=backend.hidden,
        fingerprint=fingerprint,
        fingerprint_inputs=backend.inputs,
        **backend.settings,
        storage_dtype="float16",
        n_rows=n_rows,
        rows_per_chunk=per_chunk,
        n_shards=len(starts) - 1,
        shard_starts=starts,
        refhash=store.refhash,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tdstore_version=__version__,
    )
    # Built in a temporary directory and renamed: a reader never sees half a group.
    with atomic_path(set_path(store, name), overwrite=False) as tmp:
        group = zarr.open_group(str(tmp), mode="w", attributes=attrs)
        group.create_array(
            "vectors",
            shape=(n_rows, backend.hidden),
            chunks=(per_chunk, backend.hidden),
            dtype="float16",
            fill_value=0,
            compressors=None,  # float16 barely compresses
            attributes=S.EMBEDDINGS.attrs(fingerprint=fingerprint),
        )
        group.create_array(
            "n_windows",
            shape=(n_rows,),
            chunks=(per_chunk,),
            dtype="int32",
            fill_value=0,
            compressors=None,
            attributes=S.EMBEDDING_WINDOWS.attrs(),
        )
        group.create_group("shards")
    return dict(attrs["tdstore"])


def _open_or_create(
    store: Store, name: str, backend: _Backend, n_shards: int | None, workers: int
) -> dict[str, Any]:
    fingerprint = fingerprint_of(
        {
            "schema": S.EMBEDDINGS.name,
            "schema_version": S.EMBEDDINGS.version,
            "engine": ENGINE_VERSION,
            **backend.inputs,
        }
    )
    # Two workers starting together: one creates, the other waits and then opens.
    with store.lock(f"embed-{name}", timeout=300):
        if set_path(store, name).exists():
            attrs = read_attrs(store, name)
            store.check_refhash(attrs, set_path(store, name))
            if attrs.get("fingerprint") != fingerprint:
                raise ConflictError(_conflict_message(name, attrs, backend.inputs))
            return attrs
        return _create(store, name, backend, fingerprint, n_shards, workers)


def _conflict_message(name: str, attrs: dict[str, Any], inputs: dict[str, Any]) -> str:
    old = attrs.get("fingerprint_inputs") or {}
    differ = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
    what = ", ".join(differ) if differ else "tdstore version"
    return (
        f"embedding set {name!r} exists with different settings ({what} differ); "
        f"pass --name to make a new set"
    )


# ----- shard markers ---------------------------------------------------------------------------
def _marker_path(path: Path, shard: int) -> Path:
    return path / "shards" / str(shard) / "zarr.json"


def read_marker(path: Path, shard: int) -> dict[str, Any] | None:
    """The completion record of a shard, or None if the shard is not finished."""
    file = _marker_path(path, shard)
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{file}: unreadable shard marker ({exc})") from None
    return dict(doc.get("attributes", {}).get("tdstore_shard") or {})


def _write_marker(path: Path, shard: int, marker: dict[str, Any]) -> None:
    # A marker is a Zarr group document so Zarr tools see a valid hierarchy.
    file = _marker_path(path, shard)
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        file, {"zarr_format": 3, "node_type": "group", "attributes": {"tdstore_shard": marker}}
    )


def shard_rows(attrs: dict[str, Any], shard: int) -> tuple[int, int]:
    starts = attrs["shard_starts"]
    return int(starts[shard]), int(starts[shard + 1])


def shard_checksum(vectors: np.ndarray, n_windows: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(vectors, dtype="<f2").tobytes())
    digest.update(np.ascontiguousarray(n_windows, dtype="<i4").tobytes())
    return digest.hexdigest()


def markers(store: Store, name: str, attrs: dict[str, Any] | None = None) -> list[dict | None]:
    attrs = attrs or read_attrs(store, name)
    path = set_path(store, name)
    return [read_marker(path, s) for s in range(int(attrs["n_shards"]))]


# ----- reading ----------------------------------------------------------------------------------
def load_embeddings(
    store: Store, name: str, rows: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors (float32, len(rows) x hidden, in the order of ``rows``) and the set's attrs.

    Raises IncompleteError listing the pending shards if the set is not finished.
    """
    import zarr

    attrs = read_attrs(store, name)
    path = set_path(store, name)
    store.check_refhash(attrs, path)
    pending = [s for s, m in enumerate(markers(store, name, attrs)) if m is None]
    if pending:
        shown = ", ".join(map(str, pending[:10])) + (" ..." if len(pending) > 10 else "")
        raise IncompleteError(
            f"{path}: {len(pending)} of {attrs['n_shards']} shards pending ({shown}); "
            f"resume with `tdstore embed {store.path} --model ... --name {name}`"
        )
    array = zarr.open_array(str(path / "vectors"), mode="r")
    from tdstore.tables import check_array

    check_array(array, S.EMBEDDINGS, str(path / "vectors"))
    if rows is None:
        return np.asarray(array[:], dtype=np.float32), attrs
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, int(attrs["hidden"])), dtype=np.float32), attrs
    if rows.min() < 0 or rows.max() >= array.shape[0]:
        raise UsageError(f"{path}: rows outside 0..{array.shape[0] - 1}")
    if rows.size > array.shape[0] // 8:
        # Reading everything is faster than scattered chunks for a large selection.
        return np.asarray(array[:], dtype=np.float32)[rows], attrs
    unique, inverse = np.unique(rows, return_inverse=True)
    values = array.get_orthogonal_selection((unique, slice(None)))
    return np.asarray(values, dtype=np.float32)[inverse], attrs


def load_n_windows(store: Store, name: str) -> np.ndarray:
    import zarr

    read_attrs(store, name)
    return np.asarray(zarr.open_array(str(set_path(store, name) / "n_windows"), mode="r")[:])


def status(store: Store, name: str) -> dict[str, Any]:
    """Done and pending shards, rows, tokens and throughput of one set."""
    attrs = read_attrs(store, name)
    done = [m for m in markers(store, name, attrs) if m is not None]
    n_shards = int(attrs["n_shards"])
    pending = [s for s, m in enumerate(markers(store, name, attrs)) if m is None]
    seconds = sum(float(m.get("seconds", 0.0)) for m in done)
    tokens = sum(int(m.get("tokens", 0)) for m in done)
    bp = sum(int(m.get("bp", 0)) for m in done)
    return {
        "name": name,
        "model": attrs.get("model"),
        "fingerprint": attrs.get("fingerprint"),
        "n_rows": int(attrs["n_rows"]),
        "n_shards": n_shards,
        "done": len(done),
        "pending": pending,
        "rows_done": sum(int(m["rows"][1]) - int(m["rows"][0]) for m in done),
        "computed": sum(int(m.get("computed", 0)) for m in done),
        "copied": sum(int(m.get("copied", 0)) for m in done),
        "tokens": tokens,
        "bp": bp,
        "seconds": round(seconds, 3),
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "bp_per_s": bp / seconds if seconds > 0 else None,
        "workers": sorted({str(m.get("worker")) for m in done}),
    }


def describe(store: Store, name: str) -> dict[str, Any]:
    attrs = read_attrs(store, name)
    state = status(store, name)
    return {
        "model": attrs.get("model"),
        "hidden": attrs.get("hidden"),
        "pooling": attrs.get("pooling"),
        "window": attrs.get("window"),
        "max_windows": attrs.get("max_windows"),
        "dtype": attrs.get("dtype"),
        "fingerprint": str(attrs.get("fingerprint"))[:16],
        "n_rows": attrs.get("n_rows"),
        "shards": f"{state['done']}/{state['n_shards']}",
        "complete": state["done"] == state["n_shards"],
    }


def check(store: Store, name: str, deep: bool) -> list[str]:
    """Problems of one set; ``deep`` re-hashes every finished shard to find corrupt ones."""
    import zarr

    where = f"embeddings/{name}{SUFFIX}"
    try:
        attrs = read_attrs(store, name)
        store.check_refhash(attrs, where)
        group = _group(set_path(store, name))
        vectors, n_windows = group["vectors"], group["n_windows"]
    except (TdstoreError, KeyError) as exc:
        return [f"{where}: {exc}"]
    problems = []
    from tdstore.tables import check_array

    try:
        check_array(vectors, S.EMBEDDINGS, f"{where}/vectors")
        check_array(n_windows, S.EMBEDDING_WINDOWS, f"{where}/n_windows")
    except TdstoreError as exc:
        problems.append(str(exc))
    expected = (store.n_contigs, int(attrs["hidden"]))
    if tuple(vectors.shape) != expected or n_windows.shape != (store.n_contigs,):
        problems.append(f"{where}: shape {vectors.shape}, expected {expected}")
        return problems
    pending = []
    for shard in range(int(attrs["n_shards"])):
        try:
            marker = read_marker(set_path(store, name), shard)
        except TdstoreError as exc:
            problems.append(str(exc))
            continue
        if marker is None:
            pending.append(shard)
            continue
        a, b = shard_rows(attrs, shard)
        if (
            list(marker.get("rows", [])) != [a, b]
            or marker.get("fingerprint") != attrs["fingerprint"]
        ):
            problems.append(f"{where}: shard {shard} marker does not match the set's layout")
            continue
        if deep:
            try:
                found = shard_checksum(vectors[a:b], n_windows[a:b])
            except Exception as exc:  # zarr raises several types for damaged chunks
                problems.append(f"{where}: shard {shard} (rows {a}-{b - 1}) unreadable ({exc})")
                continue
            if found != marker.get("sha256"):
                problems.append(
                    f"{where}: shard {shard} (rows {a}-{b - 1}) is corrupt (checksum mismatch); "
                    f"delete {where}/shards/{shard} and re-run tdstore embed to recompute it"
                )
    if pending:
        problems.append(
            f"{where}: unfinished, {len(pending)} of {attrs['n_shards']} shards pending; "
            "re-run the same tdstore embed command to resume"
        )
    del zarr
    return problems


# ----- the content cache ---------------------------------------------------------------------
class ContentCache:
    """Vectors by sequence md5 under one fingerprint: other sets of this store, and a
    directory shared between stores (``<cache>/<fingerprint>/part-*.parquet``)."""

    def __init__(self, store: Store, name: str, attrs: dict[str, Any], directory: Path | None):
        self.store, self.name, self.attrs = store, name, attrs
        self.fingerprint = str(attrs["fingerprint"])
        self.hidden = int(attrs["hidden"])
        self.folder = directory / self.fingerprint if directory is not None else None
        self._index: dict[str, tuple[str, Any]] | None = None  # md5 -> (source, locator)
        self._parts: dict[str, Any] = {}

    def _build(self, md5_of_row: np.ndarray) -> dict[str, tuple[str, Any]]:
        import pyarrow.parquet as pq

        index: dict[str, tuple[str, Any]] = {}
        if self.folder is not None and self.folder.exists():
            for part in sorted(self.folder.glob("part-*.parquet")):
                if ".tmp-" in part.name:
                    continue
                read_metadata(part, S.EMBEDDING_CACHE)
                column = pq.read_table(part, columns=["seq_md5"]).column(0).to_pylist()
                for i, md5 in enumerate(column):
                    index.setdefault(md5, ("dir", (str(part), i)))
        for other in list_names(self.store):
            if other == self.name:
                continue
            try:
                attrs = read_attrs(self.store, other)
            except TdstoreError:
                continue
            if attrs.get("fingerprint") != self.fingerprint:
                continue
            for shard, marker in enumerate(markers(self.store, other, attrs)):
                if marker is None:
                    continue
                a, b = shard_rows(attrs, shard)
                for row in range(a, b):
                    index.setdefault(str(md5_of_row[row]), ("set", (other, row)))
        return index

    def lookup(self, md5s: list[str], md5_of_row: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        """float16 vector and window count of every md5 found."""
        import zarr

        if self._index is None:
            self._index = self._build(md5_of_row)
        found: dict[str, tuple[np.ndarray, int]] = {}
        by_set: dict[str, list[tuple[str, int]]] = {}
        for md5 in md5s:
            hit = self._index.get(md5)
            if hit is None:
                continue
            source, where = hit
            if source == "set":
                by_set.setdefault(where[0], []).append((md5, where[1]))
            else:
                table = self._part(where[0])
                vector = np.frombuffer(table["vector"][where[1]], dtype="<f2")
                found[md5] = (vector, int(table["n_windows"][where[1]]))
        for other, hits in by_set.items():
            rows = np.asarray(sorted({r for _, r in hits}), dtype=np.int64)
            path = set_path(self.store, other)
            vectors = zarr.open_array(str(path / "vectors"), mode="r").get_orthogonal_selection(
                (rows, slice(None))
            )
            windows = zarr.open_array(str(path / "n_windows"), mode="r").get_coordinate_selection(
                rows
            )
            position = {int(r): i for i, r in enumerate(rows)}
            for md5, row in hits:
                i = position[row]
                found[md5] = (np.asarray(vectors[i], dtype="<f2"), int(windows[i]))
        return found

    def _part(self, path: str) -> dict[str, Any]:
        import pyarrow.parquet as pq

        if path not in self._parts:
            if len(self._parts) > 8:
                self._parts.clear()
            table = pq.read_table(path, columns=["vector", "n_windows"])
            self._parts[path] = {
                "vector": table.column("vector").to_pylist(),
                "n_windows": table.column("n_windows").to_pylist(),
            }
        return self._parts[path]

    def add(self, md5s: list[str], vectors: np.ndarray, n_windows: np.ndarray) -> None:
        """Append vectors not yet in the shared directory (one atomic part file)."""
        import uuid

        import pyarrow as pa

        from tdstore.tables import write_table

        if self.folder is None:
            return
        assert self._index is not None
        new = [i for i, m in enumerate(md5s) if self._index.get(m, ("set",))[0] != "dir"]
        if not new:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "info.json"
        if not info.exists():
            write_json_atomic(
                info,
                {
                    k: self.attrs.get(k)
                    for k in (
                        "fingerprint",
                        "fingerprint_inputs",
                        "model",
                        "hidden",
                        "pooling",
                        "window",
                        "stride",
                        "max_windows",
                        "layer",
                        "dtype",
                    )
                },
            )
        part = self.folder / f"part-{uuid.uuid4().hex}.parquet"
        f16 = np.ascontiguousarray(vectors[new], dtype="<f2")
        table = pa.table(
            {
                "seq_md5": [md5s[i] for i in new],
                "vector": [row.tobytes() for row in f16],
                "n_windows": np.asarray(n_windows[new], dtype=np.int32),
            }
        )
        write_table(part, S.EMBEDDING_CACHE, table, metadata={"fingerprint": self.fingerprint})
        for j, i in enumerate(new):
            self._index[md5s[i]] = ("dir", (str(part), j))


# ----- computing ---------------------------------------------------------------------------------
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
    import zarr

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

    result = ctx.backend.compute(prepared, on_tokens) if work.compute else None
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
    zarr.open_array(str(ctx.path / "vectors"), mode="r+")[a:b] = vectors
    zarr.open_array(str(ctx.path / "n_windows"), mode="r+")[a:b] = n_windows
    n_copied = len(work.unique) - len(work.compute)
    marker = {
        "shard": work.shard,
        "rows": [a, b],
        "fingerprint": ctx.attrs["fingerprint"],
        "sha256": shard_checksum(vectors, n_windows),
        "computed": len(work.compute),
        "copied": (b - a) - len(work.compute),
        "unique": len(work.unique),
        "tokens": tokens,
        "covered_tokens": covered,
        "windows": windows,
        "bp": computed_bp,
        "seconds": round(time.monotonic() - started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "worker": ctx.worker,
        "host": socket.gethostname(),
        "device": ctx.backend.device,
        "tdstore_version": __version__,
    }
    _write_marker(ctx.path, work.shard, marker)
    ctx.cache.add(work.unique, unique_vectors, unique_windows)
    ctx.computed += len(work.compute)
    ctx.copied += n_copied
    ctx.tokens += tokens
    progress.advance(work.bp - advanced[0], contigs=b - a)
    return marker


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
    pooling: str = "mean",
    window: int | None = None,
    stride: int | None = None,
    max_windows: int | None = None,
    layer: int = -1,
    dtype: str = "auto",
    cache: Path | str | None = None,
    trust_remote_code: bool = False,
    n_shards: int | None = None,
    max_shards: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Compute (or resume) embedding set ``name`` for this worker's shards; returns a summary.

    Worker ``i`` of ``N`` (``shard="i/N"``, or from SLURM / torchrun variables) takes
    shards ``i, i+N, ...``; finished shards are skipped, so re-running resumes.
    ``max_shards`` stops after that many shards (for time-limited jobs).
    """
    from tdstore.progress import Progress

    started = time.monotonic()
    index, count = parse_shard(shard)
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
            else (f"{backend.label}-{pooling}")
        )
    validate_name(name, "embedding set")
    attrs = _open_or_create(store, name, backend, n_shards, count)
    path = set_path(store, name)
    mine = list(range(index, int(attrs["n_shards"]), count))
    pending = [s for s in mine if read_marker(path, s) is None]
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
    left = [s for s in mine if read_marker(path, s) is None]
    summary.update(
        status="done" if not left else "partial",
        shards_done=len(done_shards),
        shards_left=len(left),
        computed=ctx.computed,
        copied=ctx.copied,
        tokens=ctx.tokens,
        seconds=round(time.monotonic() - started, 3),
    )
    return summary


def _claim_next(
    ctx: _Context, pending: list[int], start: int, pool: ThreadPoolExecutor
) -> tuple[_ShardWork, int, Callable[[], None]] | None:
    """Lock the next pending shard no other worker holds and start preparing it."""
    for position in range(start, len(pending)):
        shard = pending[position]
        lock = ctx.store.lock(f"embed-shard-{ctx.name}@{shard}")
        try:
            lock.__enter__()
        except ConflictError:
            log.info("shard %d is being computed by another process; skipped", shard)
            continue

        def release(lock: Any = lock) -> None:
            lock.__exit__(None, None, None)

        if read_marker(ctx.path, shard) is not None:  # finished while we were busy
            release()
            continue
        work = _plan_shard(ctx, shard)
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

        parts.append(f"GPU mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return ", ".join(parts)
