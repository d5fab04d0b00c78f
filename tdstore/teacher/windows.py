"""Cutting a tokenised contig into model windows: whole contigs, never silent truncation.

A window holds ``content`` tokens of the contig plus the tokenizer's special tokens
(GenomeOcean: ``[CLS] ... [SEP]``); windows start every ``stride`` tokens::

    plan = WindowPlan(content=1022, stride=1022)
    plan.spans(2500)            # [(0, 1022), (1022, 2044), (2044, 2500)]

Windows are cut from token ids (the contig is tokenised once), so they are exact:
no base is lost or tokenised differently at a window edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdstore.errors import UsageError


@dataclass(frozen=True)
class WindowPlan:
    """``content`` tokens per window, a new window every ``stride`` tokens, at most ``max_windows``."""

    content: int
    stride: int
    max_windows: int | None = None

    def __post_init__(self) -> None:
        if self.content < 1:
            raise UsageError(f"window of {self.content} sequence tokens: must be at least 1")
        if not 1 <= self.stride <= self.content:
            raise UsageError(
                f"stride {self.stride} must be between 1 and the window's {self.content} "
                "sequence tokens (a larger stride would skip sequence)"
            )
        if self.max_windows is not None and self.max_windows < 1:
            raise UsageError(f"--max-windows {self.max_windows}: must be at least 1")

    def n_windows(self, n_tokens: int) -> int:
        """Windows needed to cover ``n_tokens`` (capped by ``max_windows``); 1 for an empty contig."""
        extra = max(0, n_tokens - self.content)
        full = 1 + -(-extra // self.stride)  # ceiling division
        return full if self.max_windows is None else min(full, self.max_windows)

    def spans(self, n_tokens: int) -> list[tuple[int, int]]:
        """(start, end) token ranges; together they cover the contig unless ``max_windows`` cuts."""
        return [
            (i * self.stride, min(i * self.stride + self.content, n_tokens))
            for i in range(self.n_windows(n_tokens))
        ]

    def covered(self, n_tokens: int) -> int:
        """Tokens of the contig seen by at least one window."""
        spans = self.spans(n_tokens)
        return spans[-1][1] if spans else 0


def resolve_plan(
    *,
    limit: int,
    n_special: int,
    window: int | None,
    stride: int | None,
    max_windows: int | None,
) -> WindowPlan:
    """A plan from the model's token ``limit`` and the user's options.

    ``window`` counts every token the model sees in one window, special tokens
    included (the same meaning as a tokenizer's ``max_length``), and may not
    exceed ``limit``; ``stride`` counts sequence tokens and defaults to the
    window's sequence tokens (windows touch, no overlap).
    """
    size = limit if window is None else window
    if size > limit:
        raise UsageError(f"--window {size} exceeds the model's limit of {limit} tokens")
    content = size - n_special
    if content < 1:
        raise UsageError(
            f"--window {size} leaves no room for sequence after {n_special} special tokens"
        )
    return WindowPlan(
        content=content, stride=content if stride is None else stride, max_windows=max_windows
    )
