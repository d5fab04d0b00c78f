"""Atomic publication of files and directories.

Nothing a reader can see is ever half-written: writers produce ``<name>.tmp-<id>``
next to the target, flush it to disk, and ``os.replace`` it into place. A crash
leaves at most a stray temporary, which :func:`remove_stale_temporaries` cleans up.

    with atomic_path(store / "labels" / "mmseqs.parquet") as tmp:
        pq.write_table(table, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tdstore._killpoints import maybe_kill

TMP_MARK = ".tmp-"


def temporary_sibling(target: Path) -> Path:
    """A unique path in the same directory as ``target`` (same filesystem: rename is atomic)."""
    return target.with_name(f"{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")


def fsync_path(path: Path) -> None:
    """Flush a file, or every file under a directory, to disk."""
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_file(child)
    elif path.exists():
        fsync_file(path)


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk (before a rename publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename into it); best effort where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree (not what a symlink points to); missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def discard(path: Path) -> None:
    """Delete ``path`` so that it is whole or gone: rename aside (atomic), then remove.

    A kill during the removal leaves a ``*.tmp-*`` sibling that ``tdstore check`` lists.
    """
    aside = temporary_sibling(path)
    os.replace(path, aside)
    remove_path(aside)


@contextlib.contextmanager
def atomic_path(
    target: Path | str, *, overwrite: bool = True, durable: bool = True
) -> Iterator[Path]:
    """Yield a temporary path; on success move it onto ``target`` atomically.

    The temporary may be a file or a directory. On an exception the temporary is
    removed and ``target`` is untouched. A directory target that exists is
    replaced (the old one is moved aside first, then removed) only if ``overwrite``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writer produced nothing at {tmp}")
        if durable:
            fsync_path(tmp)
        publish(tmp, target, overwrite=overwrite)
    except BaseException:
        remove_path(tmp)
        raise


def publish(tmp: Path, target: Path, *, overwrite: bool = True) -> None:
    """Move ``tmp`` onto ``target``; directories are swapped in one step where Linux can."""
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    maybe_kill("publish")
    if tmp.is_dir() and target.exists() and _exchange(tmp, target):
        # One step: a reader sees the old or the new directory, never neither.
        maybe_kill("publish-exchanged")
        remove_path(tmp)  # now the old directory
    elif tmp.is_dir() and target.exists():
        aside = temporary_sibling(target)
        os.replace(target, aside)
        maybe_kill("publish-aside")
        os.replace(tmp, target)
        remove_path(aside)
    else:
        os.replace(tmp, target)
    maybe_kill("published")
    fsync_dir(target.parent)


_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        import ctypes

        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):  # glibc < 2.28, musl
            function = False
        else:
            function.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
        _renameat2 = function
    if not _renameat2:
        return False
    import ctypes

    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the filesystem cannot exchange (e.g. some network filesystems)
    raise OSError(code, os.strerror(code), str(b))


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: Path | str, obj: Any) -> None:
    write_bytes_atomic(
        target, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    )


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete leftovers of killed writers under ``root``; returns what was removed.

    Only call this while holding the store's write lock: a live writer's
    temporary looks the same as a dead one's.
    """
    removed = []
    for path in sorted(root.rglob(f"*{TMP_MARK}*"), key=lambda p: len(p.parts)):
        if path.exists() and TMP_MARK in path.name:
            remove_path(path)
            removed.append(path)
    return removed
