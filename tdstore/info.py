"""What a store holds, as a dict (``tdstore info --json`` prints it as is)::

summary = store_info(tdstore.open("gut.tdstore"))
summary["contigs"], summary["label_sets"]
"""

from __future__ import annotations

from typing import Any

from tdstore.stages import stage_modules
from tdstore.store import Store


def disk_usage(store: Store) -> int:
    return sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())


def store_info(store: Store) -> dict[str, Any]:
    info: dict[str, Any] = {
        "path": str(store.path),
        "tdstore_version": store.manifest.get("tdstore_version"),
        "created": store.manifest.get("created"),
        "ingested": store.is_ingested,
        "contigs": 0,
        "filtered": 0,
        "samples": [],
        "bases": 0,
        "refhash": None,
        "size_bytes": disk_usage(store),
        "label_sets": {},
        "embeddings": {},
        "soft_labels": {},
        "subsets": {},
        "runs": {},
    }
    if store.is_ingested:
        core = store.core
        info.update(
            contigs=core["n_contigs"],
            filtered=core["n_filtered"],
            samples=core["samples"],
            bases=core.get("n_bases", 0),
            refhash=core["refhash"],
            min_length=core["min_length"],
        )
    for kind, module in stage_modules():
        info[kind] = {name: module.describe(store, name) for name in module.list_names(store)}
    return info
