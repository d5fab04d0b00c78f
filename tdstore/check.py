"""``tdstore check``: is every published object complete, tagged and aligned?

Returns a list of problems (empty = healthy); each names the object::

    problems = check_store(tdstore.open("gut.tdstore"), deep=True)
"""

from __future__ import annotations

import hashlib
import importlib

from tdstore.errors import TdstoreError
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_table

# Each stage module that owns named objects offers list_names(store) and
# check(store, name, deep) -> list[str]; they are checked in this order.
STAGE_MODULES = (
    "tdstore.teacher.embed_store",
    "tdstore.teacher.soft_labels",
    "tdstore.subsets",
    "tdstore.student.runs",
)


def check_store(store: Store, *, deep: bool = False) -> list[str]:
    problems: list[str] = []
    stray = [str(p.relative_to(store.path)) for p in store.path.rglob("*.tmp-*")]
    if stray:
        problems.append(f"unfinished writes left by a killed process: {', '.join(stray[:5])}")
    if not store.is_ingested:
        return problems
    try:
        problems += _check_core(store, deep=deep)
    except TdstoreError as exc:
        problems.append(str(exc))
        return problems
    problems += _check_labels(store)
    for module_name in STAGE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for name in module.list_names(store):
            try:
                problems += module.check(store, name, deep)
            except TdstoreError as exc:
                problems.append(str(exc))
    return problems


def _check_core(store: Store, *, deep: bool) -> list[str]:
    from tdstore.store import refhash_of

    problems = []
    core = store.core
    contigs, _ = read_table(store.core_dir / "contigs.parquet", S.CONTIGS)
    kept = contigs.filter(contigs.column("kept"))
    ids = kept.column("contig_id").to_pylist()
    rows = kept.column("row").to_pylist()
    if rows != list(range(len(rows))):
        problems.append("core/contigs.parquet: rows of kept contigs are not dense 0..N-1")
    if len(ids) != core["n_contigs"]:
        problems.append(
            f"core/contigs.parquet: {len(ids)} kept contigs, core.json says {core['n_contigs']}"
        )
    if refhash_of(ids) != core["refhash"]:
        problems.append("core/contigs.parquet: contig ids do not match the store's refhash")
    for name, array in (("tnf", store.tnf()), ("abundance", store.abundance())):
        if array.shape[0] != len(ids):
            problems.append(
                f"core/features.zarr/{name}: {array.shape[0]} rows, expected {len(ids)}"
            )
    if store.abundance().shape[1] != len(store.samples):
        problems.append("core/features.zarr/abundance: columns do not match the sample names")
    if deep:
        md5 = dict(
            zip(kept.column("row").to_pylist(), kept.column("seq_md5").to_pylist(), strict=True)
        )
        seen = 0
        for row, sequence in store.iter_sequences():
            seen += 1
            if hashlib.md5(sequence.encode()).hexdigest() != md5.get(row):
                problems.append(
                    f"core/sequences.parquet: sequence of row {row} ({ids[row]}) is corrupt"
                )
        if seen != len(ids):
            problems.append(f"core/sequences.parquet: {seen} sequences, expected {len(ids)}")
        for name, array in (("tnf", store.tnf()), ("abundance", store.abundance())):
            try:
                array[:]
            except Exception as exc:
                problems.append(f"core/features.zarr/{name}: unreadable chunk ({exc})")
    return problems


def _check_labels(store: Store) -> list[str]:
    problems = []
    n_taxa = len(store.taxonomy())
    for name in store.label_sets():
        try:
            table, _ = store.labels(name)
        except TdstoreError as exc:
            problems.append(str(exc))
            continue
        taxa = table.column("taxon_id").to_numpy()
        if taxa.size and (taxa.max() >= n_taxa or taxa.min() < 0):
            problems.append(f"labels/{name}.parquet: taxon ids outside the store's taxonomy")
        rows = table.column("row").to_numpy()
        if rows.size and (rows.max() >= store.n_contigs or rows.min() < 0):
            problems.append(f"labels/{name}.parquet: rows outside the store")
    return problems
