"""One versioned declaration of every table, array and document a store holds.

Writers build their Arrow schema or Zarr attributes from these declarations;
readers call :func:`check_metadata` and refuse names or versions they do not know
(the anndata ``encoding-type``/``encoding-version`` idea)::

    from tdstore.schemas import SCHEMAS
    spec = SCHEMAS["tdstore.contigs"]
    table = pa.table(columns, schema=spec.arrow_schema())
"""

from __future__ import annotations

from tdstore.schemas.registry import (
    METADATA_REFHASH,
    METADATA_SCHEMA,
    METADATA_VERSION,
    SCHEMAS,
    ArraySpec,
    Column,
    DocumentSpec,
    TableSpec,
    check_metadata,
    get,
)

__all__ = [
    "METADATA_REFHASH",
    "METADATA_SCHEMA",
    "METADATA_VERSION",
    "SCHEMAS",
    "ArraySpec",
    "Column",
    "DocumentSpec",
    "TableSpec",
    "check_metadata",
    "get",
]

# Importing the declarations fills the registry.
from tdstore.schemas import declarations as _declarations  # noqa: E402,F401
