"""``tdstore migrate``: bring a store written by an older tdstore to the current schemas.

Every stored object carries its schema name and version (JSON ``schema``, Parquet footer,
Zarr ``attrs['tdstore']``, safetensors header). :func:`inventory` finds them all by
walking the store; :func:`migrate` upgrades those older than this tdstore's declarations
through the chain of registered steps, each publishing the upgraded object atomically::

    for found in inventory(tdstore.open("old.tdstore")): print(found.path, found.version)
    report = migrate(tdstore.open("old.tdstore"))          # what was upgraded
    problems(tdstore.open("old.tdstore"))  # what cannot be migrated (untagged, too new, ...)

A schema version bump in ``schemas/declarations.py`` must come with a step registered
here (``@step("tdstore.labels", 1)``: version 1 -> 2) and a new frozen archive in
``tests/data/archives/``; ``tests/test_backcompat.py`` opens every archive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdstore.atomic import TMP_MARK
from tdstore.errors import SchemaError
from tdstore.schemas import METADATA_SCHEMA, METADATA_VERSION, SCHEMAS
from tdstore.schemas import declarations as S
from tdstore.store import Store

# (schema name, from version) -> function upgrading the object at a path to version + 1.
Step = Callable[[Path], None]
STEPS: dict[tuple[str, int], Step] = {}


def step(schema: str, from_version: int) -> Callable[[Step], Step]:
    """Register the upgrade of ``schema`` objects from ``from_version`` to the next version."""

    def register(function: Step) -> Step:
        STEPS[(schema, from_version)] = function
        return function

    return register


@dataclass(frozen=True)
class Found:
    """One schema-tagged object of a store."""

    path: Path  # the file (or Zarr node directory) that carries the tag
    schema: str
    version: int

    @property
    def current(self) -> int:
        spec = SCHEMAS.get(self.schema)
        return spec.version if spec is not None else -1

    @property
    def state(self) -> str:
        if self.current < 0:
            return "unknown schema"
        if self.version > self.current:
            return "newer than this tdstore"
        return "current" if self.version == self.current else "needs migration"


def inventory(store: Store) -> list[Found]:
    """Every tagged object under the store, in path order (leftover temporaries skipped)."""
    found = []
    for path in sorted(store.path.rglob("*")):
        rel = path.relative_to(store.path)
        if not path.is_file() or ".locks" in rel.parts or TMP_MARK in str(rel):
            continue
        tag = _tag_of(path)
        if tag is not None:
            where = path.parent if path.name == "zarr.json" else path
            found.append(Found(where, tag[0], tag[1]))
    return found


def _tag_of(path: Path) -> tuple[str, int] | None:
    try:
        if path.suffix == ".json":
            return _json_tag(json.loads(path.read_text()))
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            return _pair(meta.get(METADATA_SCHEMA.encode()), meta.get(METADATA_VERSION.encode()))
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
            return _pair(meta.get(METADATA_SCHEMA), meta.get(METADATA_VERSION))
    except Exception as exc:  # damaged files: JSON, Arrow and safetensors raise several types
        raise SchemaError(f"{path}: unreadable while taking the inventory ({exc})") from None
    return None


def _json_tag(doc: Any) -> tuple[str, int] | None:
    if not isinstance(doc, dict):
        return None
    if "schema" in doc:  # a document (manifest, core.json, run.json)
        return _pair(doc.get("schema"), doc.get("schema_version"))
    tag = (doc.get("attributes") or {}).get("tdstore")  # a Zarr node's zarr.json
    if isinstance(tag, dict):
        return _pair(tag.get("schema"), tag.get("schema_version"))
    return None


def _pair(name: Any, version: Any) -> tuple[str, int] | None:
    if name is None:
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        return name, int(version.decode() if isinstance(version, bytes) else version)
    except (TypeError, ValueError):
        return name, -1


# Where tdstore's objects live (relative to the store; Zarr nodes are directories), with
# the schema each must be tagged with. A file there without a tag was not written by
# tdstore or is damaged: readers refuse it, and migrate cannot upgrade what it cannot
# identify, so it must say so rather than skip it.
TAGGED: tuple[tuple[str, str], ...] = (
    ("manifest.json", S.MANIFEST.name),
    ("taxonomy.parquet", S.TAXONOMY.name),
    ("core/core.json", S.CORE.name),
    ("core/contigs.parquet", S.CONTIGS.name),
    ("core/sequences.parquet", S.SEQUENCES.name),
    ("core/features.zarr/tnf", S.TNF.name),
    ("core/features.zarr/abundance", S.ABUNDANCE.name),
    ("labels/*.parquet", S.LABELS.name),
    ("metrics/*.parquet", S.METRICS.name),
    ("embeddings/*.zarr", S.EMBEDDINGS.name),
    ("embeddings/*.zarr/vectors", S.EMBEDDINGS.name),
    ("embeddings/*.zarr/n_windows", S.EMBEDDING_WINDOWS.name),
    ("soft_labels/*.parquet", S.SOFT_LABELS.name),
    ("soft_labels/*.head.safetensors", S.TEACHER_HEAD.name),
    ("subsets/*.parquet", S.SUBSET.name),
    ("runs/*/run.json", S.RUN.name),
    ("runs/*/metrics.parquet", S.METRICS.name),
    ("runs/*/predictions.parquet", S.PREDICTIONS.name),
)


def untagged(store: Store) -> list[tuple[Path, str]]:
    """Paths where tdstore keeps an object that carry no schema tag, each with the one expected."""
    out = []
    for pattern, expected in TAGGED:
        for path in sorted(store.path.glob(pattern)):
            rel = path.relative_to(store.path)
            if TMP_MARK in str(rel) or any(part.startswith(".") for part in rel.parts):
                continue  # leftovers of killed writers, saved training state
            node = path / "zarr.json" if path.suffix == ".zarr" or path.is_dir() else path
            if not node.is_file() or _tag_of(node) is None:
                out.append((path, expected))
    return out


def problems(store: Store) -> list[str]:
    """Every object migrate cannot bring to the current schemas, one line each (path first).

    Untagged objects, unknown or newer schemas, and versions with no registered step:
    ``tdstore check`` refuses them too, and migrate changes nothing while any exists.
    """
    out = [
        f"{path.relative_to(store.path)}: no tdstore schema tag (expected {expected}); "
        "not written by tdstore or corrupt, so it cannot be migrated"
        for path, expected in untagged(store)
    ]
    for found in inventory(store):
        rel = found.path.relative_to(store.path)
        if found.state in ("unknown schema", "newer than this tdstore"):
            out.append(f"{rel}: schema {found.schema} v{found.version}: {found.state}")
        elif found.state == "needs migration":
            missing = [
                v for v in range(found.version, found.current) if (found.schema, v) not in STEPS
            ]
            if missing:
                out.append(
                    f"{rel}: no migration of {found.schema} from version {missing[0]}; "
                    "use the tdstore version that wrote this store"
                )
    return out


def plan(store: Store) -> list[tuple[Found, list[Step]]]:
    """The steps each outdated object needs; SchemaError if any object cannot be migrated."""
    blocked = problems(store)
    if blocked:
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        raise SchemaError(f"{store.path}/{blocked[0]}{more}")
    out = []
    for found in inventory(store):
        if found.state == "needs migration":
            chain = [STEPS[(found.schema, v)] for v in range(found.version, found.current)]
            out.append((found, chain))
    return out


def migrate(store: Store, *, dry_run: bool = False) -> list[str]:
    """Upgrade every outdated object (all checked before any is touched); one line each."""
    if dry_run:  # a pure read: no lock file either
        return [_line(store, found) for found, _ in plan(store)]
    with store.lock("migrate"):
        todo = plan(store)
        lines = []
        for found, chain in todo:
            lines.append(_line(store, found))
            for function in chain:
                function(found.path)  # each step publishes atomically
        return lines


def _line(store: Store, found: Found) -> str:
    rel = found.path.relative_to(store.path)
    return f"{rel}: {found.schema} v{found.version} -> v{found.current}"
