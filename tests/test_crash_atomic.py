"""Atomic publication under SIGKILL and concurrent readers (tdstore.atomic + kill points)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from crashkit import step_env

from tdstore import atomic

WRITER = """
import sys
from pathlib import Path
from tdstore.atomic import atomic_path, write_json_atomic
target = Path(sys.argv[1])
if sys.argv[2] == "dir":
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "content").write_text("new")
else:
    write_json_atomic(target, {"content": "new"})
"""


def _write_killed(target: Path, kind: str, point: str) -> int:
    env = step_env(TDSTORE_KILL_AT=point)
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(target), kind], env=env, capture_output=True, timeout=120
    )
    return done.returncode


def _old_directory(path: Path) -> Path:
    path.mkdir()
    (path / "content").write_text("old")
    return path


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ("publish:1", "old"),
        ("publish-exchanged:1", "new"),
        ("published:1", "new"),
        ("none:1", "new"),
    ],
)
def test_directory_overwrite_is_all_or_nothing(tmp_path, point, expected):
    target = _old_directory(tmp_path / "run")
    code = _write_killed(target, "dir", point)
    assert code == (0 if point == "none:1" else -9)
    # Whatever the kill point, the target is a whole directory, old or new.
    assert (target / "content").read_text() == expected
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert all(atomic.TMP_MARK in name for name in leftovers)
    assert atomic.remove_stale_temporaries(tmp_path) == [tmp_path / n for n in sorted(leftovers)]


@pytest.mark.parametrize(("point", "expected"), [("publish:1", "old"), ("published:1", "new")])
def test_file_overwrite_is_all_or_nothing(tmp_path, point, expected):
    target = tmp_path / "doc.json"
    target.write_text('{"content": "old"}')
    assert _write_killed(target, "file", point) == -9
    assert expected in target.read_text()


def test_readers_always_see_a_whole_directory(tmp_path):
    """A reader polling while a writer replaces the directory 200 times never misses it."""
    target = _old_directory(tmp_path / "run")
    stop = threading.Event()
    seen: list[str] = []
    missing = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append((target / "content").read_text())
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            with atomic.atomic_path(target, durable=False) as tmp:
                tmp.mkdir()
                (tmp / "content").write_text(str(i))
    finally:
        stop.set()
        reader.join()
    assert missing == [] and len(seen) > 0
    assert (target / "content").read_text() == "199"


def test_without_exchange_the_two_rename_fallback_works(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = _old_directory(tmp_path / "run")
    with atomic.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "content").write_text("new")
    assert (target / "content").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
