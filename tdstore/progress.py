"""Progress for long steps: a rich bar on a terminal, plain periodic lines otherwise.

SLURM logs are not terminals, so there a line like
``embed: 1200/5000 contigs (24.0%) 3.1 Mbp/s, ETA 0:02:10`` is printed at least
every ``interval`` seconds::

    with Progress("ingest", total=n_bytes, unit="bp") as bar:
        bar.advance(len(seq), contigs=1)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tdstore._killpoints import maybe_kill

log = logging.getLogger("tdstore")


def _human(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class Progress:
    """Reports ``done/total`` with rate and ETA; ``extra`` counters are summed and shown."""

    def __init__(
        self,
        description: str,
        total: float | None,
        *,
        unit: str = "",
        interval: float | None = None,
        enabled: bool = True,
        status: Callable[[], str] | None = None,
        initial: float = 0.0,
    ):
        self.description = description
        self.total = total
        self.unit = unit
        # Work done before this process started (a resumed step): shown, not in the rate.
        self.initial = initial
        self.done = initial
        self.extra: dict[str, float] = {}
        self.status = status
        self.enabled = enabled and os.environ.get("TDSTORE_QUIET") != "1"
        self.interval = (
            interval if interval is not None else float(os.environ.get("TDSTORE_LOG_INTERVAL", 30))
        )
        self._rich: Any = None
        self._task: Any = None
        self._start = time.monotonic()
        self._last = self._start

    def __enter__(self) -> Progress:
        self._start = self._last = time.monotonic()
        if self.enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(
                self.description, total=self.total, completed=self.done, rate=""
            )
        return self

    def rate_text(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        parts = [f"{_human((self.done - self.initial) / elapsed)} {self.unit}/s".strip()]
        parts += [f"{_human(v / elapsed)} {k}/s" for k, v in self.extra.items()]
        return ", ".join(parts)

    def advance(self, amount: float = 1, **extra: float) -> None:
        maybe_kill("progress")  # a crash point for tests; free unless armed
        self.done += amount
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, rate=self.rate_text())
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._log_line()

    def _log_line(self) -> None:
        elapsed = time.monotonic() - self._start
        if self.total:
            pct = 100.0 * self.done / self.total
            new = self.done - self.initial
            eta = elapsed / new * (self.total - self.done) if new else float("nan")
            eta_text = str(timedelta(seconds=int(eta))) if eta == eta else "?"
            head = f"{_human(self.done)}/{_human(self.total)} {self.unit} ({pct:.1f}%)"
        else:
            head, eta_text = f"{_human(self.done)} {self.unit}", "?"
        status = f", {self.status()}" if self.status else ""
        print(
            f"{self.description}: {head}, {self.rate_text()}, ETA {eta_text}{status}",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled and self.done > self.initial:
            self._log_line()
