"""The stage modules that own named objects in a store, by kind.

Each offers ``list_names(store)``, ``describe(store, name)`` and
``check(store, name, deep)``; ``tdstore info`` and ``tdstore check`` walk this registry::

    for kind, module in stage_modules(): module.list_names(store)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

STAGE_MODULES: dict[str, str] = {
    "label_sets": "tdstore.labels",
    "embeddings": "tdstore.teacher.embed_store",
    "soft_labels": "tdstore.teacher.soft_labels",
    "subsets": "tdstore.subsets",
    "runs": "tdstore.student.runs",
    "caches": "tdstore.calls",
}


def stage_modules() -> Iterator[tuple[str, ModuleType]]:
    """(kind, module) pairs in workflow order; imported on demand (torch stays unloaded)."""
    for kind, name in STAGE_MODULES.items():
        yield kind, importlib.import_module(name)
