"""Deterministic crash points, for the crash-safety tests (inert unless an env var is set).

Publication points (tdstore.atomic) and progress steps (tdstore.progress) call
:func:`maybe_kill`. With ``TDSTORE_KILL_AT=n`` the process SIGKILLs itself at the n-th
point it passes (``TDSTORE_KILL_AT=publish:2``: at the 2nd point tagged ``publish``);
with ``TDSTORE_KILL_TRACE=file`` it appends ``n<TAB>tag<TAB>seconds`` per point, so a
test can list a step's points from one clean run::

    TDSTORE_KILL_TRACE=/tmp/points tdstore ingest s.tdstore --fasta c.fna   # list points
    TDSTORE_KILL_AT=3 tdstore ingest s.tdstore --fasta c.fna                # die at the 3rd
"""

from __future__ import annotations

import os
import signal
import threading
import time

KILL_AT_ENV = "TDSTORE_KILL_AT"
TRACE_ENV = "TDSTORE_KILL_TRACE"

_spec = os.environ.get(KILL_AT_ENV) or ""
_kill_tag, _, _kill_nth = _spec.rpartition(":")
_kill_at = int(_kill_nth or 0)
_trace = os.environ.get(TRACE_ENV) or None
_armed = bool(_kill_at or _trace)  # read once: the hot path is one global lookup
_count = 0
_tag_count: dict[str, int] = {}
_lock = threading.Lock()
_start = time.monotonic()


def maybe_kill(tag: str) -> None:
    """A crash point: free unless armed by the environment."""
    if not _armed:
        return
    _pass(tag)


def _pass(tag: str) -> None:
    global _count
    with _lock:
        _count += 1
        _tag_count[tag] = _tag_count.get(tag, 0) + 1
        n = _count
        if _trace:
            with open(_trace, "a") as handle:
                handle.write(f"{n}\t{tag}\t{time.monotonic() - _start:.4f}\n")
        if (_tag_count[tag] if _kill_tag else n) == _kill_at and _kill_tag in ("", tag):
            os.kill(os.getpid(), signal.SIGKILL)
