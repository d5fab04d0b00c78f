"""The schema registry: spec types, the metadata keys, and the reader's check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tdstore.errors import SchemaError

METADATA_SCHEMA = "tdstore.schema"
METADATA_VERSION = "tdstore.schema_version"
METADATA_REFHASH = "tdstore.refhash"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<int64>": pa.list_(pa.int64()),
    "list<int32>": pa.list_(pa.int32()),
    "list<float32>": pa.list_(pa.float32()),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False
    doc: str = ""

    def arrow_field(self) -> pa.Field:
        return pa.field(self.name, _ARROW_TYPES[self.type], nullable=self.nullable)


@dataclass(frozen=True)
class TableSpec:
    """A Parquet table: its columns are fixed; provenance goes in key-value metadata."""

    name: str
    version: int
    columns: tuple[Column, ...]
    doc: str = ""
    kind: str = field(default="table", init=False)

    def arrow_schema(self, metadata: Mapping[str, str] | None = None) -> pa.Schema:
        meta = {METADATA_SCHEMA: self.name, METADATA_VERSION: str(self.version)}
        meta.update(metadata or {})
        return pa.schema([c.arrow_field() for c in self.columns], metadata=meta)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class ArraySpec:
    """A Zarr v3 array; ``attrs['tdstore']`` carries the schema name and version."""

    name: str
    version: int
    dtype: str
    ndim: int
    doc: str = ""
    kind: str = field(default="array", init=False)

    def attrs(self, **extra: Any) -> dict[str, Any]:
        return {"tdstore": {"schema": self.name, "schema_version": self.version, **extra}}


@dataclass(frozen=True)
class DocumentSpec:
    """A JSON document (manifest, run config): top-level ``schema``/``schema_version`` keys."""

    name: str
    version: int
    required: tuple[str, ...] = ()
    doc: str = ""
    kind: str = field(default="document", init=False)

    def stamp(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"schema": self.name, "schema_version": self.version, **body}


Spec = TableSpec | ArraySpec | DocumentSpec
SCHEMAS: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    if spec.name in SCHEMAS:
        raise ValueError(f"schema {spec.name} declared twice")
    SCHEMAS[spec.name] = spec
    return spec


def get(name: str) -> Spec:
    return SCHEMAS[name]


def check_metadata(where: str, expected: str, found_name: Any, found_version: Any) -> int:
    """Refuse an object whose schema name differs or whose version this tdstore does not know.

    Returns the found version (older known versions may need a migration by the caller).
    """
    spec = SCHEMAS[expected]
    if found_name is None:
        raise SchemaError(
            f"{where}: no tdstore schema tag (expected {expected}); not written by tdstore or corrupt"
        )
    if found_name != expected:
        raise SchemaError(f"{where}: holds schema {found_name!r}, expected {expected!r}")
    try:
        version = int(found_version)
    except (TypeError, ValueError):
        raise SchemaError(f"{where}: unreadable schema version {found_version!r}") from None
    if version > spec.version:
        raise SchemaError(
            f"{where}: schema {expected} version {version} is newer than this tdstore knows "
            f"(<= {spec.version}); upgrade tdstore"
        )
    if version < 1:
        raise SchemaError(f"{where}: invalid schema version {version}")
    return version
