"""The content cache: contigs already embedded under the same fingerprint are copied.

Sources, by sequence md5: finished shards of other sets of this store with the same
fingerprint, and a directory shared between stores::

    <cache>/<fingerprint>/info.json            what made these vectors (model, pooling, ...)
    <cache>/<fingerprint>/part-<uuid>.parquet  seq_md5, vector (float16 bytes), n_windows

Parts are appended one per shard, each published atomically, so concurrent workers
and stores never clash::

    cache = ContentCache(store, "go500m-mean", attrs, Path("/shared/embed-cache"))
    found = cache.lookup(md5s, md5_of_row)      # md5 -> (float16 vector, n_windows)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdstore.atomic import write_json_atomic
from tdstore.errors import TdstoreError
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata
from tdstore.teacher.embed_store import list_names, markers, read_attrs, set_path, shard_rows


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
