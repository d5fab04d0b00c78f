"""``tdstore check``: is every published object complete, tagged and aligned?

Returns a list of problems (empty = healthy); each names the object. Leftovers of
killed writers (``*.tmp-*``, a teacher head without its soft labels) are not problems:
readers never see them; :func:`leftovers` lists them and :func:`remove_leftovers`
deletes them while no writer runs::

    problems = check_store(tdstore.open("gut.tdstore"), deep=True)
    removed = remove_leftovers(tdstore.open("gut.tdstore"))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from tdstore.atomic import TMP_MARK, remove_path
from tdstore.errors import ConflictError, TdstoreError, UnfinishedProblem
from tdstore.schemas import declarations as S
from tdstore.stages import stage_modules
from tdstore.store import Store
from tdstore.student.checkpoint import RESUME_DIR
from tdstore.tables import read_table

_ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def check_store(store: Store, *, deep: bool = False) -> list[str]:
    """Every problem of the store, one line each, each naming its object once."""
    return [_one_location(store, problem) for problem in _problems(store, deep=deep)]


def _problems(store: Store, *, deep: bool) -> list[str]:
    problems: list[str] = []
    if not store.is_ingested:
        return problems
    try:
        problems += _check_core(store, deep=deep)
        store.taxonomy()
    except TdstoreError as exc:
        problems.append(str(exc))
        return problems
    for _, module in stage_modules():
        try:
            names = module.list_names(store)
        except TdstoreError as exc:
            problems.append(str(exc))
            continue
        for name in names:
            try:
                problems += module.check(store, name, deep)
            except TdstoreError as exc:
                problems.append(str(exc))
    return problems


_LOCATION = re.compile(r"([^\s:]+): ")


def _one_location(store: Store, problem: str) -> str:
    """``x.zarr: x.zarr: made for ...`` -> ``x.zarr: made for ...``; keeps the problem's type.

    Stage checks put the object's path before what went wrong, and the reader errors
    they wrap often start with the same path already (relative or absolute): collapsing
    here fixes every stage at once, and any that does it in future.
    """
    first = _LOCATION.match(problem)
    second = _LOCATION.match(problem, first.end()) if first else None
    if first is None or second is None:
        return problem
    if os.path.normpath(store.path / first[1]) != os.path.normpath(store.path / second[1]):
        return problem
    text = problem[: first.end()] + problem[second.end() :]
    return UnfinishedProblem(text) if isinstance(problem, UnfinishedProblem) else text


# ----- leftovers of killed writers ----------------------------------------------------------
def leftovers(store: Store) -> list[Path]:
    """Temporaries (``*.tmp-*``, Zarr's ``*.partial``) and heads without their soft labels.

    A running writer's temporaries look the same: they are only safe to delete while no
    tdstore command writes to the store (:func:`remove_leftovers` checks the locks).
    """
    found = [p for p in store.path.rglob(f"*{TMP_MARK}*") if TMP_MARK in p.name]
    # Zarr's own atomic chunk writes: <key>.<uuid hex>.partial, renamed when complete.
    found += [p for p in store.path.rglob("*.partial") if _ZARR_PARTIAL.search(p.name)]
    # Only the outermost temporary: a staged directory's contents go with it.
    found = [
        p for p in found if not any(TMP_MARK in q.name for q in p.relative_to(store.path).parents)
    ]
    # Saved training state of a killed (or running) `tdstore train`: the same command
    # resumes from it; one entry per run, its temporaries included.
    resume = store.object_dir("runs") / RESUME_DIR
    if resume.exists():
        states = [p for p in resume.iterdir() if TMP_MARK not in p.name]
        found = [p for p in found if not any(s in p.parents for s in states)] + states
    soft = store.object_dir("soft_labels")
    if soft.exists():
        from tdstore.teacher.soft_labels import HEAD_SUFFIX, SUFFIX

        for head in soft.glob(f"*{HEAD_SUFFIX}"):
            stem = head.name[: -len(HEAD_SUFFIX)]
            if TMP_MARK not in head.name and not (soft / f"{stem}{SUFFIX}").exists():
                found.append(head)
    return sorted(found)


def remove_leftovers(store: Store) -> list[Path]:
    """Delete :func:`leftovers`; ConflictError if any tdstore writer holds a lock on the store."""
    with _all_locks(store):
        found = leftovers(store)
        for path in found:
            remove_path(path)
    return found


@contextlib.contextmanager
def _all_locks(store: Store):  # type: ignore[no-untyped-def]
    # Every writer holds a lock (.locks/<key>.lock) while it has temporaries: holding
    # them all proves no writer is running. A writer starting meanwhile gets ConflictError.
    keys = sorted(p.stem for p in (store.path / ".locks").glob("*.lock"))
    with contextlib.ExitStack() as stack:
        for key in keys:
            try:
                stack.enter_context(store.lock(key))
            except ConflictError:
                raise ConflictError(
                    f"{store.path}: a tdstore command is writing ({key}); "
                    "remove leftovers when it has finished"
                ) from None
        yield


# ----- core ------------------------------------------------------------------------------
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
        problems += _deep_sequences(store, kept, ids)
        problems += _deep_features(store, kept)
    return problems


def _deep_sequences(store: Store, kept, ids: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Re-hash every sequence against the md5 recorded at ingest."""
    problems = []
    md5 = dict(zip(kept.column("row").to_pylist(), kept.column("seq_md5").to_pylist(), strict=True))
    seen = 0
    try:
        for row, sequence in store.iter_sequences():
            seen += 1
            if hashlib.md5(sequence.encode()).hexdigest() != md5.get(row):
                problems.append(
                    f"core/sequences.parquet: sequence of row {row} ({ids[row]}) is corrupt "
                    "(md5 differs from the one recorded at ingest)"
                )
    except TdstoreError as exc:
        return [str(exc)]
    except Exception as exc:  # pyarrow raises several types for damaged pages
        return [f"core/sequences.parquet: unreadable ({exc})"]
    if seen != len(ids):
        problems.append(f"core/sequences.parquet: {seen} sequences, expected {len(ids)}")
    return problems


def _deep_features(store: Store, kept) -> list[str]:  # type: ignore[no-untyped-def]
    """Read every feature chunk; name TNF chunks that are missing from disk.

    Zarr reads a missing chunk as its fill value (zeros) without complaint. Ingest
    writes every TNF chunk (a contig with A/C/G/T bases never has an all-zero TNF
    row), so a missing TNF chunk file over such rows is damage.
    """
    problems = []
    for name, array in (("tnf", store.tnf()), ("abundance", store.abundance())):
        try:
            array[:]
        except Exception as exc:  # zarr/numcodecs raise several types for a damaged chunk
            problems.append(f"core/features.zarr/{name}: unreadable chunk ({exc})")
    tnf = store.tnf()
    per_chunk = int(tnf.chunks[0])
    has_bases = (kept.column("length").to_numpy() - kept.column("n_count").to_numpy()) >= 4
    folder = store.core_dir / "features.zarr" / "tnf"
    for chunk in range(-(-tnf.shape[0] // per_chunk)):
        a, b = chunk * per_chunk, min(tnf.shape[0], (chunk + 1) * per_chunk)
        if has_bases[a:b].any() and not _chunk_file(folder, chunk).exists():
            problems.append(
                f"core/features.zarr/tnf: chunk {chunk} (rows {a}-{b - 1}) is missing on disk"
            )
    return problems


def _chunk_file(array_dir: Path, chunk: int) -> Path:
    # Zarr v3 default chunk key encoding: c/<i>/<j> ('/' separator); TNF has one column chunk.
    return array_dir / "c" / str(chunk) / "0"
