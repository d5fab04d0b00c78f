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


def samples_line(samples: list[str], contig_samples: list[str], show: int = 8) -> str:
    """What ``samples`` means in a store, said so that no one reads "0" as "no samples".

    A store's samples are its abundance columns (``--abundance``); contigs may still carry
    sample names (``--sample``, vamb's ``S{n}C{m}`` ids) without any abundance.
    """

    def listed(names: list[str]) -> str:
        more = f", ... ({len(names) - show} more)" if len(names) > show else ""
        return ", ".join(names[:show]) + more

    if samples:
        line = f"{len(samples)} with abundances: {listed(samples)}"
        if contig_samples and set(contig_samples) != set(samples):
            line += f"; contigs name {len(contig_samples)}: {listed(contig_samples)}"
        return line
    if contig_samples:
        return f"none with abundances; contigs name {len(contig_samples)}: {listed(contig_samples)}"
    return "none (no abundances; contigs name no sample)"


def store_info(store: Store) -> dict[str, Any]:
    info: dict[str, Any] = {
        "path": str(store.path),
        "tdstore_version": store.manifest.get("tdstore_version"),
        "created": store.manifest.get("created"),
        "ingested": store.is_ingested,
        "contigs": 0,
        "filtered": 0,
        "samples": [],
        "contig_samples": [],
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
            contig_samples=core.get("contig_samples", []),  # absent in older stores
            bases=core.get("n_bases", 0),
            refhash=core["refhash"],
            min_length=core["min_length"],
        )
    for kind, module in stage_modules():
        info[kind] = {name: module.describe(store, name) for name in module.list_names(store)}
    for name, detail in info["embeddings"].items():
        _mark_other_content(store, name, detail)
    return info


def _mark_other_content(store: Store, name: str, detail: dict[str, Any]) -> None:
    """An embedding set made for other store content is not usable: ``current`` and
    ``complete`` say so, as a subset's ``current`` does (every reader refuses such a set,
    and its finished shards are another store's rows)."""
    from tdstore.errors import ConflictError
    from tdstore.teacher.embed_store import SUFFIX, read_attrs

    try:
        store.check_refhash(read_attrs(store, name), f"embeddings/{name}{SUFFIX}")
    except ConflictError:
        detail.update(complete=False, current=False)
    else:
        detail["current"] = True
