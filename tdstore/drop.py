"""Remove stored objects: label sets, soft labels, embedding sets, runs, subsets.

Experiments pile up (a sweep of students leaves dozens of runs; a teacher replaced by a
better one leaves its embeddings), and deleting folders by hand is how a store ends up
half-broken. Here each object goes whole or not at all, and never under a writer's feet::

    dropped = drop(store, "runs", ["kd-a05", "kd-a07"])
    dropped[0].freed_bytes, dropped[0].notes

- Every name is checked before anything is removed: one unknown name removes nothing.
- The locks its writers hold (``run-<name>``, every shard lock of an embedding set, the
  metrics lock of ``evaluate``, ...) are taken for every name before anything is removed:
  an object being written is refused with a ConflictError, and nothing goes.
- It is renamed aside (atomic) and then deleted, so a kill mid-way leaves a ``*.tmp-*``
  temporary that ``tdstore check --clean`` removes, never a half-deleted object.
- What still names the object is reported, not refused: a run trained on dropped soft
  labels keeps its predictions and metrics but cannot be retrained as it was.

The taxonomy is never pruned: taxon ids are stable for the life of the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdstore.atomic import discard
from tdstore.errors import ConflictError, IncompleteError, TdstoreError, UsageError
from tdstore.schemas import declarations as S
from tdstore.store import Store
from tdstore.tables import read_metadata, read_table

KINDS: tuple[str, ...] = ("labels", "soft-labels", "embeddings", "runs", "subsets")
WHAT = {
    "labels": "label set",
    "soft-labels": "soft label set",
    "embeddings": "embedding set",
    "runs": "run",
    "subsets": "subset",
}
# Label import holds the taxonomy lock while it publishes a label set.
LABELS_LOCK_WAIT_S = 30.0


@dataclass
class Dropped:
    """One removed object: what it was, the bytes it held, and who still names it."""

    kind: str
    name: str
    freed_bytes: int
    notes: list[str] = field(default_factory=list)


def drop(store: Store, kind: str, names: list[str]) -> list[Dropped]:
    """Remove the objects ``names`` of ``kind`` (one of :data:`KINDS`), in order."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if not names:
        raise UsageError(f"name at least one {WHAT[kind]} to drop")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UsageError(f"{WHAT[kind]} {doubled[0]!r} is named twice")
    known = _list(store, kind)
    paths = {name: _paths(store, kind, name) for name in names}  # validates the names
    for name in names:
        if name not in known:
            raise IncompleteError(
                f"{store.path}: no {WHAT[kind]} {name!r} (known: {', '.join(known) or 'none'})"
            )
    notes = {name: _still_named_by(store, kind, name) for name in names}
    # Every lock first: a name that is being written stops the drop before anything goes.
    with _writer_locks(store, kind, names):
        for name in names:
            if not paths[name][0].exists():  # dropped by another process meanwhile
                raise IncompleteError(f"{store.path}: no {WHAT[kind]} {name!r}")
        dropped = []
        for name in names:
            freed = sum(_size(p) for p in paths[name])
            for path in paths[name]:
                if path.exists() or path.is_symlink():
                    discard(path)
            dropped.append(Dropped(kind, name, freed, notes[name]))
    return dropped


def _list(store: Store, kind: str) -> list[str]:
    if kind == "labels":
        return store.label_sets()
    if kind == "soft-labels":
        from tdstore.teacher.soft_labels import list_names

        return list_names(store)
    if kind == "embeddings":
        from tdstore.teacher.embed_store import list_names

        return list_names(store)
    if kind == "runs":
        from tdstore.student.runs import list_names

        return list_names(store)
    from tdstore.subsets import list_names

    return list_names(store)


def _paths(store: Store, kind: str, name: str) -> list[Path]:
    """Everything that belongs to the object, the object itself first."""
    if kind == "labels":
        from tdstore.evaluate import metrics_path

        return [store.label_path(name), metrics_path(store, "labels", name)]
    if kind == "soft-labels":
        from tdstore.teacher.soft_labels import head_path, table_path

        # The table first: once it is gone the set is gone; a head left by a kill is a
        # leftover that `check` lists.
        return [table_path(store, name), head_path(store, name)]
    if kind == "embeddings":
        from tdstore.teacher.embed_store import set_path

        return [set_path(store, name)]
    if kind == "runs":
        from tdstore.student.checkpoint import RESUME_DIR
        from tdstore.student.runs import run_dir

        return [run_dir(store, name), store.object_dir("runs") / RESUME_DIR / name]
    from tdstore.subsets import subset_path

    return [subset_path(store, name)]


def _lock_keys(store: Store, kind: str, name: str) -> list[str]:
    """The locks the object's writers hold, its evaluation's included."""
    if kind == "labels":
        return [f"metrics-labels-{name}"]  # and the taxonomy lock, taken once
    if kind == "soft-labels":
        return [f"soft_labels-{name}"]
    if kind == "runs":
        return [f"run-{name}", f"metrics-run-{name}"]
    if kind == "subsets":
        return [f"subset-{name}"]
    from tdstore.teacher.embed_store import read_attrs, shard_lock_key

    try:
        n_shards = int(read_attrs(store, name).get("n_shards", 0))
    except TdstoreError:
        n_shards = 0  # a damaged set: nobody can be computing it
    return [f"embed-{name}", *(shard_lock_key(name, s) for s in range(n_shards))]


@contextlib.contextmanager
def _writer_locks(store: Store, kind: str, names: list[str]) -> Iterator[None]:
    """Every lock of every object; ConflictError naming the object if one is held now."""
    with contextlib.ExitStack() as held:
        if kind == "labels":
            # Label import holds the taxonomy lock while it publishes a label set.
            try:
                held.enter_context(store.lock("taxonomy", timeout=LABELS_LOCK_WAIT_S))
            except ConflictError:
                raise ConflictError(
                    f"{store.path}: a label import is publishing; drop {names[0]!r} when it "
                    "has finished"
                ) from None
        for name in names:
            for key in _lock_keys(store, kind, name):
                try:
                    held.enter_context(store.lock(key))
                except ConflictError:
                    raise ConflictError(
                        f"{store.path}: {WHAT[kind]} {name!r} is being written by another "
                        f"process ({key}); drop it when that has finished"
                    ) from None
        yield


def _size(path: Path) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ----- who still names the object ---------------------------------------------------------
def _still_named_by(store: Store, kind: str, name: str) -> list[str]:
    """One line per kind of dependent; the dependents keep working, their recipe does not."""
    if kind == "runs":
        return []
    field_of_run = {
        "labels": "labels",
        "soft-labels": "soft_labels",
        "embeddings": "teacher_joint",
        "subsets": "subset",
    }[kind]
    runs = _runs_where(store, lambda config: config.get(field_of_run) == name)
    notes = []
    if kind in ("labels", "embeddings"):
        key = "labels" if kind == "labels" else "embeddings"
        soft = _soft_labels_where(store, lambda meta: meta.get(key) == name)
        if soft:
            notes.append(f"soft label sets made from it keep their soft labels: {', '.join(soft)}")
    if runs:
        notes.append(
            f"runs trained with it keep their predictions and metrics but cannot be "
            f"retrained as they were: {', '.join(runs)}"
        )
    if kind == "labels":
        judged = _evaluated_against(store, name)
        if judged:
            notes.append(
                f"metrics computed against it as the gold standard stay: {', '.join(judged)}"
            )
    return notes


def _evaluated_against(store: Store, gold: str) -> list[str]:
    """Runs and label sets with stored metrics against the gold standard ``gold``."""
    import pyarrow.compute as pc

    from tdstore.evaluate import METRICS_DIR
    from tdstore.student.runs import METRICS_FILE

    found = []
    files = sorted(store.object_dir("runs").glob(f"*/{METRICS_FILE}"))
    files += sorted((store.path / METRICS_DIR).glob("labels-*.parquet"))
    for path in files:
        if ".tmp-" in str(path):
            continue
        try:
            table, _ = read_table(path, S.METRICS, columns=["gold"])
        except TdstoreError:
            continue
        if pc.any(pc.equal(table.column("gold"), gold)).as_py():
            owner = path.parent.name if path.name == METRICS_FILE else path.stem
            found.append(owner.replace("labels-", "labels:", 1))
    return found


def _runs_where(store: Store, wanted: Callable[[dict[str, Any]], bool]) -> list[str]:
    from tdstore.student.runs import list_names, load_run

    found = []
    for run in list_names(store):
        try:
            config = load_run(store, run).get("config") or {}
        except TdstoreError:
            continue  # a damaged or foreign run: `check` reports it
        if wanted(config):
            found.append(run)
    return found


def _soft_labels_where(store: Store, wanted: Callable[[dict[str, Any]], bool]) -> list[str]:
    from tdstore.teacher.soft_labels import list_names, table_path

    found = []
    for soft in list_names(store):
        try:
            meta = read_metadata(table_path(store, soft), S.SOFT_LABELS)
        except TdstoreError:
            continue
        if wanted(meta):
            found.append(soft)
    return found
