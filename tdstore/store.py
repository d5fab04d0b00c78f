"""The store: one directory per metagenome, shared by every stage.

Stages never call each other; each reads what it needs from a :class:`Store`
and publishes its own objects into it::

    store = tdstore.open("gut.tdstore")
    store.contig_ids()[:3], store.label_sets()
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tdstore import __version__
from tdstore.atomic import TMP_MARK, write_json_atomic
from tdstore.errors import ConflictError, IncompleteError, SchemaError, UsageError
from tdstore.schemas import check_metadata
from tdstore.schemas import declarations as S
from tdstore.tables import check_array, read_metadata, read_table, write_table
from tdstore.taxonomy import Taxonomy

MANIFEST_FILE = "manifest.json"
CORE_DIR = "core"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(name: str, what: str) -> str:
    """Names become file names inside the store: no separators, no dot-dot, no hidden files.

    ``.tmp-`` is reserved: it marks a writer's temporaries, which ``check --clean`` deletes.
    """
    if not _NAME.match(name) or ".." in name:
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    if TMP_MARK in name:
        raise UsageError(
            f"invalid {what} name {name!r}: {TMP_MARK!r} marks temporary files in a store"
        )
    return name


def refhash_of(contig_ids: list[str] | np.ndarray) -> str:
    """sha256 over the ordered kept contig ids: every derived object records it."""
    import hashlib

    digest = hashlib.sha256()
    for contig_id in contig_ids:
        digest.update(str(contig_id).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def read_document(path: Path, spec_name: str) -> dict[str, Any]:
    if not path.exists():
        raise IncompleteError(f"{path}: missing")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{path}: not a JSON object")
    check_metadata(str(path), spec_name, doc.get("schema"), doc.get("schema_version"))
    return doc


def not_a_directory(path: Path) -> IncompleteError:
    """The one error for a store path that names a file (or a pipe): every command says it
    alike, with the exit code ``info`` has always given for "not a store" (4)."""
    return IncompleteError(f"{path}: exists and is not a directory (not a tdstore store)")


def init(path: Path | str, *, exist_ok: bool = False) -> Store:
    """Create an empty store directory (a manifest and nothing else)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise not_a_directory(path)
    manifest = path / MANIFEST_FILE
    if manifest.exists():
        if exist_ok:
            return Store(path)
        raise ConflictError(f"{path}: already a tdstore store")
    # A stray manifest temporary (init killed before its rename) does not make it non-empty,
    # nor do empty folders (workflow engines create output folders before the job runs).
    if path.exists() and any(p.is_file() and TMP_MARK not in p.name for p in path.rglob("*")):
        raise ConflictError(
            f"{path}: directory exists and is not empty; refusing to make it a store"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise IncompleteError(f"{path}: a parent folder exists and is not a directory") from None
    write_json_atomic(
        manifest,
        S.MANIFEST.stamp(
            {
                "tdstore_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ),
    )
    return Store(path)


def open_store(path: Path | str) -> Store:
    """Open an existing store; checks the manifest's schema tag."""
    return Store(Path(path))


class Store:
    """Typed access to a store directory. Cheap to create; reads lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise not_a_directory(self.path)
        if not (self.path / MANIFEST_FILE).exists():
            raise IncompleteError(
                f"{self.path}: not a tdstore store (no {MANIFEST_FILE}); run `tdstore init`"
            )
        self.manifest = read_document(self.path / MANIFEST_FILE, S.MANIFEST.name)

    def __repr__(self) -> str:
        n = self.core["n_contigs"] if self.is_ingested else "not ingested"
        return f"Store({str(self.path)!r}, contigs={n})"

    # ----- layout -------------------------------------------------------------------
    @property
    def core_dir(self) -> Path:
        return self.path / CORE_DIR

    def object_dir(self, kind: str) -> Path:
        """Directory of a kind of named object: labels, embeddings, soft_labels, subsets, runs."""
        if kind not in {"labels", "embeddings", "soft_labels", "subsets", "runs"}:
            raise ValueError(kind)
        return self.path / kind

    def named_path(self, kind: str, name: str, suffix: str = "") -> Path:
        validate_name(name, kind.rstrip("s").replace("_", " "))
        return self.object_dir(kind) / f"{name}{suffix}"

    # ----- locking ------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, *, timeout: float = 0.0) -> Iterator[None]:
        """An inter-process lock for one object (e.g. ``run-<name>``, ``taxonomy``).

        With ``timeout=0`` a held lock fails at once with a ConflictError: two
        writers of the same object must not both proceed.
        """
        from filelock import FileLock, Timeout

        locks = self.path / ".locks"
        locks.mkdir(exist_ok=True)
        lock = FileLock(str(locks / f"{key}.lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise ConflictError(f"{self.path}: {key} is being written by another process") from None
        try:
            yield
        finally:
            lock.release()

    # ----- core (written by ingest) ---------------------------------------------------
    @property
    def is_ingested(self) -> bool:
        return (self.core_dir / "core.json").exists()

    @cached_property
    def core(self) -> dict[str, Any]:
        if not self.is_ingested:
            raise IncompleteError(
                f"{self.path}: no contigs yet; run `tdstore ingest {self.path} --fasta ...`"
            )
        return read_document(self.core_dir / "core.json", S.CORE.name)

    @property
    def refhash(self) -> str:
        return str(self.core["refhash"])

    @property
    def n_contigs(self) -> int:
        return int(self.core["n_contigs"])

    @property
    def samples(self) -> list[str]:
        return list(self.core["samples"])

    def contigs(self, *, kept_only: bool = True, columns: list[str] | None = None) -> pa.Table:
        """The contigs table (kept contigs in row order by default)."""
        self.core  # noqa: B018 - raises a clear error if not ingested
        table, _ = read_table(self.core_dir / "contigs.parquet", S.CONTIGS, columns=columns)
        if kept_only:
            mask = table.column("kept") if "kept" in table.column_names else None
            if mask is None:
                full, _ = read_table(self.core_dir / "contigs.parquet", S.CONTIGS, columns=["kept"])
                mask = full.column("kept")
            table = table.filter(mask)
        return table

    @cached_property
    def _contig_ids(self) -> np.ndarray:
        return np.asarray(
            self.contigs(columns=["contig_id", "kept"]).column("contig_id").to_pylist(),
            dtype=object,
        )

    def contig_ids(self) -> np.ndarray:
        """Kept contig ids; index = row."""
        return self._contig_ids

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {cid: i for i, cid in enumerate(self._contig_ids)}

    def iter_sequences(
        self, rows: np.ndarray | None = None, batch_rows: int = 4096
    ) -> Iterator[tuple[int, str]]:
        """(row, sequence) pairs of kept contigs, in row order, streamed by row group."""
        import pyarrow.parquet as pq

        path = self.core_dir / "sequences.parquet"
        read_metadata(path, S.SEQUENCES)
        wanted = None if rows is None else set(int(r) for r in rows)
        with pq.ParquetFile(path, page_checksum_verification=True) as handle:
            for batch in handle.iter_batches(batch_size=batch_rows):
                row_col = batch.column(0).to_numpy()
                seqs = batch.column(1)
                for i, row in enumerate(row_col.tolist()):
                    if wanted is None or row in wanted:
                        yield row, seqs[i].as_py()

    def _features_group(self) -> Any:
        import zarr

        path = self.core_dir / "features.zarr"
        if not path.exists():
            raise IncompleteError(f"{path}: missing; the store was not ingested completely")
        return zarr.open_group(str(path), mode="r")

    def tnf(self) -> Any:
        """The raw TNF array (N x 103, float32, Zarr): slice it to load."""
        array = self._features_group()["tnf"]
        check_array(array, S.TNF, str(self.core_dir / "features.zarr/tnf"))
        return array

    def abundance(self) -> Any:
        """The raw abundance array (N x K, float32, Zarr); columns = :attr:`samples`."""
        array = self._features_group()["abundance"]
        check_array(array, S.ABUNDANCE, str(self.core_dir / "features.zarr/abundance"))
        return array

    # ----- taxonomy and labels ------------------------------------------------------
    @property
    def taxonomy_path(self) -> Path:
        return self.path / "taxonomy.parquet"

    def taxonomy(self) -> Taxonomy:
        if not self.taxonomy_path.exists():
            return Taxonomy.empty()
        table, _ = read_table(self.taxonomy_path, S.TAXONOMY)
        return Taxonomy.from_table(table)

    def write_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Callers hold ``self.lock('taxonomy')``: ids only ever get appended."""
        write_table(self.taxonomy_path, S.TAXONOMY, taxonomy.to_table())

    def list_objects(self, kind: str, suffix: str) -> list[str]:
        folder = self.object_dir(kind)
        if not folder.exists():
            return []
        return sorted(
            p.name[: -len(suffix)] if suffix else p.name
            for p in folder.iterdir()
            if p.name.endswith(suffix) and ".tmp-" not in p.name and not p.name.startswith(".")
        )

    def label_sets(self) -> list[str]:
        return self.list_objects("labels", ".parquet")

    def label_path(self, name: str) -> Path:
        return self.named_path("labels", name, ".parquet")

    def labels(self, name: str) -> tuple[pa.Table, dict[str, Any]]:
        """A label set (row, contig_id, taxon_id, novel) and its provenance."""
        path = self.label_path(name)
        if not path.exists():
            known = ", ".join(self.label_sets()) or "none"
            raise IncompleteError(f"{self.path}: no label set {name!r} (known: {known})")
        table, meta = read_table(path, S.LABELS)
        self.check_refhash(meta, path)
        return table, meta

    def check_refhash(self, meta: dict[str, Any], where: Path | str) -> None:
        from tdstore.schemas import METADATA_REFHASH

        found = meta.get(METADATA_REFHASH, meta.get("refhash"))
        if found != self.refhash:
            raise ConflictError(
                f"{where}: made for other store content (refhash {str(found)[:12]}, store {self.refhash[:12]})"
            )

    # ----- SQL and subsets (tdstore.sql, tdstore.features.load) -----------------------
    def sql(self, query: str) -> pa.Table:
        """Run a read-only DuckDB query over the store's views; see :mod:`tdstore.sql`."""
        from tdstore.sql import query as run_query

        return run_query(self, query)

    def load_features(self, subset: str | np.ndarray | None = None) -> np.ndarray:
        """The student's inputs for all rows, a saved subset or given rows (sorted)."""
        from tdstore.features.load import load_features

        return load_features(self, subset)
