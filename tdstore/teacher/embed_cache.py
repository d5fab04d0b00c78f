"""The content cache: contigs already embedded under the same fingerprint are copied.

Sources, by sequence md5: finished shards of other sets of this store (same refhash)
with the same fingerprint, each re-hashed against its marker before use, and a directory
shared between stores::

    <cache>/<fingerprint>/info.json            what made these vectors (model, pooling, ...)
    <cache>/<fingerprint>/part-<uuid>.parquet  seq_md5, vector (float16 bytes), n_windows

Parts are appended one per shard, each published atomically, so concurrent workers
and stores never clash::

    cache = ContentCache(store, "go500m-mean", attrs, Path("/shared/embed-cache"))
    found = cache.lookup(md5s, md5_of_row)      # md5 -> (float16 vector, n_windows)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tdstore.atomic import write_json_atomic
from tdstore.errors import TdstoreError
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata
from tdstore.teacher.embed_store import (
    list_names,
    markers,
    read_attrs,
    read_marker,
    set_path,
    shard_checksum,
    shard_lock_key,
    shard_rows,
)

log = logging.getLogger("tdstore")
# A source shard locked longer than this is being recomputed: its rows are computed here.
SOURCE_LOCK_WAIT = 5.0
# Verified source shards kept in memory (at least the last one, whatever its size).
VERIFIED_BYTES = 256 << 20


class ContentCache:
    """Vectors by sequence md5 under one fingerprint: other sets of this store, and a
    directory shared between stores (``<cache>/<fingerprint>/part-*.parquet``).

    A copied vector gets a fresh shard checksum in the new set, so a bad source would be
    laundered into data that ``check --deep`` trusts. Sources are therefore only sets of
    this store's content (refhash) and recipe (fingerprint), only shards whose marker fits
    the set's layout, and each source shard is re-hashed against its marker (once per run)
    before any of its rows is copied; rows of a shard that fails are computed instead.
    """

    def __init__(self, store: Store, name: str, attrs: dict[str, Any], directory: Path | None):
        self.store, self.name, self.attrs = store, name, attrs
        self.fingerprint = str(attrs["fingerprint"])
        self.hidden = int(attrs["hidden"])
        self.folder = directory / self.fingerprint if directory is not None else None
        # md5 -> ("dir", (part, i)) or ("set", (set name, shard, row))
        self._index: dict[str, tuple[str, Any]] | None = None
        self._parts: dict[str, Any] = {}
        self._sources: dict[str, dict[str, Any]] = {}  # set name -> attrs
        self._verified: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._failed: set[tuple[str, int]] = set()
        self._arrays: dict[str, tuple[Any, Any]] = {}  # set name -> (vectors, n_windows)

    def _usable_source(self, other: str) -> dict[str, Any] | None:
        """The attrs of set ``other`` if its rows can stand in for this set's, else None."""
        try:
            attrs = read_attrs(self.store, other)
        except TdstoreError:
            return None
        if (
            attrs.get("fingerprint") != self.fingerprint
            or attrs.get("refhash") != self.store.refhash  # rows of other store content
            or attrs.get("n_rows") != self.store.n_contigs
            or attrs.get("hidden") != self.hidden
        ):
            return None
        return attrs

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
            attrs = self._usable_source(other)
            if attrs is None:
                continue
            self._sources[other] = attrs
            try:
                found = markers(self.store, other, attrs)  # strays count as unfinished
            except TdstoreError:
                continue
            for shard, marker in enumerate(found):
                if marker is None:
                    continue
                a, b = shard_rows(attrs, shard)
                for row in range(a, b):
                    index.setdefault(str(md5_of_row[row]), ("set", (other, shard, row)))
        return index

    def lookup(self, md5s: list[str], md5_of_row: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        """float16 vector and window count of every md5 found (in a verified source)."""
        if self._index is None:
            self._index = self._build(md5_of_row)
        found: dict[str, tuple[np.ndarray, int]] = {}
        by_shard: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for md5 in md5s:
            hit = self._index.get(md5)
            if hit is None:
                continue
            source, where = hit
            if source == "set":
                other, shard, row = where
                by_shard.setdefault((other, shard), []).append((md5, row))
            else:
                table = self._part(where[0])
                vector = np.frombuffer(table["vector"][where[1]], dtype="<f2")
                found[md5] = (vector, int(table["n_windows"][where[1]]))
        for (other, shard), hits in by_shard.items():
            data = self._source_shard(other, shard)
            if data is None:
                continue  # failed its checksum or is being rewritten: compute these rows
            vectors, windows = data
            a, _ = shard_rows(self._sources[other], shard)
            for md5, row in hits:
                found[md5] = (np.asarray(vectors[row - a], dtype="<f2"), int(windows[row - a]))
        return found

    def _source_shard(self, other: str, shard: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Shard ``shard`` of set ``other``, read whole and checked against its marker.

        Read under the shard's lock, so a shard being recomputed (or a set being replaced)
        is never read half-written; a shard that is busy, unreadable or corrupt is
        skipped for the rest of the run. A few verified shards stay in memory, since
        neighbouring shards of this set usually copy from the same source shard.
        """
        import zarr

        key = (other, shard)
        if key in self._failed:
            return None
        if key in self._verified:
            self._verified[key] = self._verified.pop(key)  # most recently used last
            return self._verified[key]
        attrs = self._sources[other]
        path = set_path(self.store, other)
        a, b = shard_rows(attrs, shard)
        try:
            with self.store.lock(shard_lock_key(other, shard), timeout=SOURCE_LOCK_WAIT):
                marker = read_marker(path, shard, attrs)
                if marker is None:
                    raise TdstoreError("no longer finished")
                if other not in self._arrays:  # opening costs milliseconds: once per set
                    self._arrays[other] = (
                        zarr.open_array(str(path / "vectors"), mode="r"),
                        zarr.open_array(str(path / "n_windows"), mode="r"),
                    )
                vector_array, window_array = self._arrays[other]
                vectors = np.asarray(vector_array[a:b])
                windows = np.asarray(window_array[a:b])
        except Exception as exc:  # a lock held, a damaged chunk (zarr raises several types)
            log.warning("content cache: not copying from %s shard %d (%s)", other, shard, exc)
            self._failed.add(key)
            return None
        if shard_checksum(vectors, windows) != marker.get("sha256"):
            log.warning(
                "content cache: %s shard %d (rows %d-%d) fails its checksum; computing its "
                "rows instead (tdstore check --deep names it)",
                other,
                shard,
                a,
                b - 1,
            )
            self._failed.add(key)
            return None
        self._verified[key] = (vectors, windows)
        while (
            len(self._verified) > 1
            and sum(v.nbytes + w.nbytes for v, w in self._verified.values()) > VERIFIED_BYTES
        ):
            del self._verified[next(iter(self._verified))]
        return self._verified[key]

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
