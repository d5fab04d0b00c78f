"""Embedding sets on disk: ``embeddings/<name>.zarr``, written shard by shard.

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
atomic rename after its chunks are written). Computing lives in ``embed_run``; readers
use::

    vectors, attrs = load_embeddings(store, "GenomeOcean-500M-mean")   # float32 N x hidden
    vectors, _ = load_embeddings(store, "kmer4", rows=np.array([0, 5, 9]))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tdstore import __version__
from tdstore.atomic import atomic_path, discard, write_json_atomic
from tdstore.errors import (
    ConflictError,
    IncompleteError,
    SchemaError,
    TdstoreError,
    UnfinishedProblem,
    UsageError,
)
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import check_array, chunk_rows

log = logging.getLogger("tdstore")

SUFFIX = ".zarr"
# Bump when the same inputs would give different numbers (pooling or windowing code).
ENGINE_VERSION = 1
MAX_SHARD_ROWS = 16384  # bounds a shard's memory: rows x hidden x 8 bytes while combining
MIN_SHARDS = 64
MIN_SHARD_ROWS = 256


@dataclass(frozen=True)
class Recipe:
    """What a set is computed from: ``inputs`` is fingerprinted, ``settings`` recorded."""

    kind: str  # "model" or "kmer"
    model: str  # model directory name or kmer:K
    model_path: str | None
    hidden: int
    inputs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


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

    By default 64 shards (fewer for small sets: at least 256 rows each, since each shard
    costs a few file syncs), at most 16384 rows per shard, and at least one shard per
    worker; chunks of about 2 MiB, smaller where needed so every shard gets a chunk.
    """
    small = math.ceil(n_rows / MIN_SHARD_ROWS)
    wanted = n_shards or max(min(MIN_SHARDS, small), math.ceil(n_rows / MAX_SHARD_ROWS), workers)
    wanted = max(1, wanted)
    per_chunk = min(chunk_rows(hidden, 2), max(1, math.ceil(n_rows / wanted)))
    n_chunks = max(1, math.ceil(n_rows / per_chunk))
    n = min(wanted, n_chunks)
    starts = [min(n_rows, (s * n_chunks // n) * per_chunk) for s in range(n)] + [n_rows]
    return per_chunk, starts


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
    store: Store, name: str, recipe: Recipe, fingerprint: str, n_shards: int | None, workers: int
) -> dict[str, Any]:
    import zarr

    n_rows = store.n_contigs
    per_chunk, starts = shard_layout(n_rows, recipe.hidden, n_shards, workers)
    attrs = S.EMBEDDINGS.attrs(
        name=name,
        teacher=recipe.kind,
        model=recipe.model,
        model_path=recipe.model_path,
        hidden=recipe.hidden,
        fingerprint=fingerprint,
        fingerprint_inputs=recipe.inputs,
        **recipe.settings,
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
            shape=(n_rows, recipe.hidden),
            chunks=(per_chunk, recipe.hidden),
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


def open_or_create(
    store: Store, name: str, recipe: Recipe, *, n_shards: int | None = None, workers: int = 1
) -> dict[str, Any]:
    """The set's attrs; creates the set if new, refuses one made with other settings.

    An existing set is replaced only if it has no finished shard and no live process
    holds one of its shard locks: a worker still computing into it must never find its
    set deleted (and its shard published into a set made with other settings).
    """
    fingerprint = fingerprint_of(
        {
            "schema": S.EMBEDDINGS.name,
            "schema_version": S.EMBEDDINGS.version,
            "engine": ENGINE_VERSION,
            **recipe.inputs,
        }
    )
    # Two workers starting together: one creates, the other waits and then opens.
    with store.lock(f"embed-{name}", timeout=300):
        path = set_path(store, name)
        if not path.exists():
            return _create(store, name, recipe, fingerprint, n_shards, workers)
        attrs = read_attrs(store, name)
        store.check_refhash(attrs, path)
        if attrs.get("fingerprint") == fingerprint:
            _check_n_shards(name, attrs, n_shards)
            return attrs
        if _has_finished_shard(path, attrs):
            raise ConflictError(_conflict_message(name, attrs, recipe.inputs))
        with _all_shard_locks(store, name, attrs):
            # A worker may have finished a shard between the check above and the locks.
            if _has_finished_shard(path, attrs):
                raise ConflictError(_conflict_message(name, attrs, recipe.inputs))
            # Nothing finished and nobody computing (say the model failed to load): no
            # work is lost by starting over, and refusing would leave the name blocked.
            log.warning(
                "embedding set %r has no finished shard and other settings: replacing it", name
            )
            discard(path)
            return _create(store, name, recipe, fingerprint, n_shards, workers)


def shard_lock_key(name: str, shard: int) -> str:
    """The lock a worker holds while computing one shard (and a replacement takes all of)."""
    return f"embed-shard-{name}@{shard}"


@contextlib.contextmanager
def _all_shard_locks(store: Store, name: str, attrs: dict[str, Any]) -> Iterator[None]:
    """Every shard lock of the set, taken without waiting; ConflictError if one is held."""
    with contextlib.ExitStack() as held:
        for shard in range(int(attrs.get("n_shards", 0))):
            try:
                held.enter_context(store.lock(shard_lock_key(name, shard)))
            except ConflictError:
                raise ConflictError(
                    f"{store.path}: embedding set {name!r} has other settings and is being "
                    f"computed by another process (shard {shard} is locked); wait for it to "
                    "finish, or pass --name for a new set"
                ) from None
        yield


def _check_n_shards(name: str, attrs: dict[str, Any], n_shards: int | None) -> None:
    # A count that gives the set's own layout is fine (a request above the number of
    # chunks is capped the same way each time); any other would be silently ignored.
    if n_shards is None:
        return
    _, starts = shard_layout(int(attrs["n_rows"]), int(attrs["hidden"]), n_shards)
    if starts != [int(s) for s in attrs["shard_starts"]]:
        raise UsageError(
            f"--n-shards {n_shards}: embedding set {name!r} exists with "
            f"{attrs['n_shards']} shards; pass --n-shards {attrs['n_shards']} or leave it "
            "out to resume it, or pass --name for a new set"
        )


def _has_finished_shard(path: Path, attrs: dict[str, Any]) -> bool:
    return any(
        read_marker(path, shard, attrs) is not None for shard in range(int(attrs["n_shards"]))
    )


# What a worker's rows and vectors depend on: a set with the same identity accepts them.
_IDENTITY = ("fingerprint", "refhash", "n_rows", "hidden", "rows_per_chunk", "shard_starts")


def verify_unchanged(path: Path, attrs: dict[str, Any], shard: int) -> None:
    """Refuse to write shard ``shard`` unless the set at ``path`` is still the one opened.

    Another process may have replaced the set (other settings) after this worker opened
    it; writing then would put vectors of one recipe into a set that promises another.
    """
    try:
        doc = json.loads((path / "zarr.json").read_text())
        found = dict(doc.get("attributes", {}).get("tdstore") or {})
    except (OSError, json.JSONDecodeError, AttributeError):
        found = {}
    changed = [k for k in _IDENTITY if found.get(k) != attrs.get(k)]
    if changed:
        raise ConflictError(
            f"{path}: the embedding set was replaced or changed by another process while "
            f"this worker ran (differs in: {', '.join(changed)}); shard {shard} was not "
            "written; re-run to continue with the set as it is now, or pass --name"
        )


def _conflict_message(name: str, attrs: dict[str, Any], inputs: dict[str, Any]) -> str:
    old = attrs.get("fingerprint_inputs") or {}
    differ = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
    what = ", ".join(differ) if differ else "tdstore engine version"
    return (
        f"embedding set {name!r} exists with different settings (differs in: {what}); "
        "pass --name to make a new set"
    )


def _marker_path(path: Path, shard: int) -> Path:
    return path / "shards" / str(shard) / "zarr.json"


def read_marker(
    path: Path, shard: int, attrs: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The completion record of a shard, or None if the shard is not finished.

    With the set's ``attrs``, a marker that does not match the set's fingerprint and
    row range (a stray left by a set of other settings) also counts as not finished:
    it promises nothing about this set's data.
    """
    file = _marker_path(path, shard)
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{file}: unreadable shard marker ({exc})") from None
    attributes = doc.get("attributes") if isinstance(doc, dict) else None
    marker = attributes.get("tdstore_shard") if isinstance(attributes, dict) else None
    if not isinstance(marker, dict):
        marker = {}
    if attrs is not None and not marker_matches(marker, attrs, shard):
        return None
    return dict(marker)


def marker_matches(marker: dict[str, Any], attrs: dict[str, Any], shard: int) -> bool:
    """Whether a marker is the record of shard ``shard`` of the set ``attrs`` describes."""
    if not 0 <= shard < int(attrs["n_shards"]):
        return False
    a, b = shard_rows(attrs, shard)
    rows = marker.get("rows")
    return (
        isinstance(rows, list)
        and rows == [a, b]
        and marker.get("fingerprint") == attrs.get("fingerprint")
        and isinstance(marker.get("sha256"), str)
    )


def write_marker(path: Path, shard: int, marker: dict[str, Any]) -> None:
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
    """The valid marker of every shard (None: pending, or a stray marker that does not fit)."""
    attrs = attrs or read_attrs(store, name)
    path = set_path(store, name)
    return [read_marker(path, s, attrs) for s in range(int(attrs["n_shards"]))]


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
    found = markers(store, name, attrs)
    done = [m for m in found if m is not None]
    n_shards = int(attrs["n_shards"])
    pending = [s for s, m in enumerate(found) if m is None]
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
    except TdstoreError as exc:
        return [str(exc)]  # names the set already
    except KeyError as exc:
        return [f"{where}: no {exc} array"]
    problems = []
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
            problems.append(
                f"{where}: shard {shard} marker does not match the set's layout or "
                "fingerprint (counted as pending); re-run tdstore embed to recompute it"
            )
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
            UnfinishedProblem(
                f"{where}: unfinished, {len(pending)} of {attrs['n_shards']} shards pending; "
                "re-run the same tdstore embed command to resume"
            )
        )
    del zarr
    return problems
