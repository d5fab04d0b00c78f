"""Checks of the paths users name for results (``--output``, ``--plots``), run before any work.

A command that finds out only at publication time that its output cannot be written has
spent minutes for nothing and, worse, fails with an ``OSError`` from deep inside
:mod:`tdstore.atomic`. So every command that writes outside the store checks its target
first, here, and a bad one is a one-line :class:`~tdstore.errors.UsageError`::

    output = check_output_file(output, option="--output", store=store, inputs=[fasta])
    plots = check_output_dir(plots, option="--plots", store=store)

A path inside the store is refused: a stray file there could shadow or replace a stored
object, and ``tdstore check --clean`` could delete it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tdstore.atomic import temporary_sibling
from tdstore.errors import UsageError


def check_output_file(
    path: Path | str,
    *,
    option: str = "--output",
    store: Any = None,
    inputs: Iterable[Path | str | None] = (),
) -> Path:
    """``path`` if a file can be published there (atomically); else a UsageError naming ``option``.

    The target must not be a directory or anything but a regular file, nor one of the
    command's ``inputs``; its nearest existing ancestor must be a directory this process
    can create files in (missing directories in between are created on publication).
    ``store`` is a :class:`~tdstore.store.Store` or its path; None skips that check.
    """
    target = Path(path)
    _refuse_inside_store(target, option, store)
    if target.is_dir():
        raise UsageError(f"{option} {target}: is a directory; give a file name")
    if target.exists() and not target.is_file():
        raise UsageError(f"{option} {target}: exists and is not a regular file")
    if target.exists():
        for source in inputs:
            if source is not None and Path(source).exists() and os.path.samefile(target, source):
                raise UsageError(f"{option} {target}: is an input of this command")
    _check_creatable(target.parent, option, target)
    return target


def check_output_dir(path: Path | str, *, option: str = "--plots", store: Any = None) -> Path:
    """``path`` if files can be written into it (it may not exist yet); else a UsageError."""
    target = Path(path)
    _refuse_inside_store(target, option, store)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} {target}: exists and is not a directory")
    _check_creatable(target, option, target)
    return target


def _refuse_inside_store(target: Path, option: str, store: Any) -> None:
    if store is None:
        return
    root = Path(getattr(store, "path", store)).resolve()
    # Resolved twice: through a symlinked parent directory, and through the target
    # itself where it is a symlink (publication would replace the link, but refusing
    # a path that points into the store is the safe reading).
    for candidate in (target.parent.resolve() / target.name, target.resolve()):
        if candidate == root or root in candidate.parents:
            raise UsageError(
                f"{option} {target}: inside the store {root}; write results outside it "
                "(a file there could damage the store)"
            )


def _check_creatable(directory: Path, option: str, target: Path) -> None:
    """The nearest existing ancestor of ``directory`` (itself included) takes new files."""
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {target}: {existing} is not a directory")
    # os.access says yes to root everywhere and knows nothing of /proc or full disks:
    # creating (and removing) a file is the one test that cannot be wrong.
    probe = temporary_sibling(existing / ".tdstore-write-check")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise UsageError(
            f"{option} {target}: cannot create files in {existing} ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)
