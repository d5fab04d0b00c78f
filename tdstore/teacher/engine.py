"""The forward pass: windows of token ids -> packed batches -> pooled, combined contig vectors.

Each contig is tokenised once; its windows are sorted by length and packed into
batches under a padded-token budget; pooled window vectors are combined per contig,
weighted by their token counts::

    engine = Engine(load_model("GenomeOcean-500M"), pooling="mean", batch_tokens=65536)
    result = engine.embed(["ACGT...", "TTGA..."])   # result.vectors: n x hidden float32

On CUDA out-of-memory the budget is halved and the batch retried; the result does
not depend on the budget except through the padding of each batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tdstore.errors import ModelError, UsageError
from tdstore.teacher.models import Teacher
from tdstore.teacher.windows import WindowPlan

log = logging.getLogger("tdstore")
POOLINGS = ("mean", "last")


@dataclass
class EmbedResult:
    vectors: np.ndarray  # n x hidden, float32
    n_windows: np.ndarray  # n, int32
    n_tokens: np.ndarray  # n, int64: sequence tokens of each contig (special tokens excluded)
    covered: np.ndarray  # n, int64: sequence tokens seen by at least one window


@dataclass
class EngineStats:
    """Counters over the engine's life (for progress lines and benchmarks)."""

    windows: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_retries: int = 0
    budgets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Windows:
    """All windows of a list of contigs in canonical order (by contig, then by start)."""

    item: np.ndarray  # contig index of each window
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray  # windows of contig i are offsets[i]:offsets[i+1]

    @property
    def content(self) -> np.ndarray:
        return self.end - self.start


def cut_windows(token_counts: Sequence[int], plan: WindowPlan) -> Windows:
    items, starts, ends, counts = [], [], [], []
    for i, n in enumerate(token_counts):
        spans = plan.spans(int(n))
        counts.append(len(spans))
        items.extend([i] * len(spans))
        starts.extend(s for s, _ in spans)
        ends.extend(e for _, e in spans)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Windows(
        np.asarray(items, dtype=np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
        offsets,
    )


def pack_batches(lengths: np.ndarray, budget: int, start: int = 0) -> tuple[int, int]:
    """The batch that starts at ``start`` of length-sorted (descending) windows: (start, stop).

    Its padded size (count x longest) stays within ``budget``; a window longer than the
    budget goes alone. Once the batch fills half of the budget it also stops before
    a window shorter than 90% of its longest, so padding stays small on short lists.
    """
    longest = max(int(lengths[start]), 1)
    stop = min(len(lengths), start + max(1, budget // longest))
    enough = max(1, budget // (2 * longest))  # windows that make a reasonably full batch
    if stop - start > enough:
        short = np.nonzero(lengths[start + enough : stop] < 0.9 * longest)[0]
        if short.size:
            stop = start + enough + int(short[0])
    return start, stop


class Engine:
    """Embeds contigs with a loaded :class:`~tdstore.teacher.models.Teacher`."""

    def __init__(
        self,
        teacher: Teacher,
        plan: WindowPlan,
        *,
        pooling: str = "mean",
        layer: int = -1,
        batch_tokens: int = 16384,
    ):
        if pooling not in POOLINGS:
            raise UsageError(f"--pooling {pooling}: expected mean or last")
        if batch_tokens < 1:
            raise UsageError(f"--batch-tokens {batch_tokens}: must be positive")
        self.teacher = teacher
        self.plan = plan
        self.pooling = pooling
        self.layer = layer
        self.batch_tokens = batch_tokens
        self.stats = EngineStats()
        self._check_layer()
        self.causal = causal_attention(teacher.model)

    def _check_layer(self) -> None:
        n_layers = getattr(self.teacher.model.config, "num_hidden_layers", None)
        if n_layers is not None and not -(n_layers + 1) <= self.layer <= n_layers:
            raise UsageError(
                f"--layer {self.layer}: the model has {n_layers} layers "
                f"(use -1 for the last, 0 for the token embeddings)"
            )

    # ----- tokenising ---------------------------------------------------------------
    def tokenize(self, sequences: Sequence[str]) -> list[np.ndarray]:
        return self.tokenize_with(self.teacher.tokenizer, sequences)

    @staticmethod
    def tokenize_with(tokenizer: Any, sequences: Sequence[str]) -> list[np.ndarray]:
        """Sequence token ids (no special tokens) per contig; the fast tokenizer is parallel."""
        if not sequences:
            return []
        encoded = tokenizer(
            list(sequences),
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded]

    def embed(self, sequences: Sequence[str], **kwargs: Any) -> EmbedResult:
        return self.embed_tokens(self.tokenize(sequences), **kwargs)

    # ----- forward --------------------------------------------------------------------
    def embed_tokens(
        self,
        token_ids: Sequence[np.ndarray],
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> EmbedResult:
        """Embed pre-tokenised contigs; ``on_batch(real_tokens)`` is called after each batch."""
        n_tokens = np.asarray([len(t) for t in token_ids], dtype=np.int64)
        windows = cut_windows(n_tokens.tolist(), self.plan)
        lengths = windows.content + self.teacher.n_special
        pooled = self._forward_windows(token_ids, windows, lengths, on_batch)
        vectors = combine(pooled, lengths, windows.offsets)
        covered = np.asarray([self.plan.covered(int(n)) for n in n_tokens], dtype=np.int64)
        return EmbedResult(
            vectors=vectors,
            n_windows=np.diff(windows.offsets).astype(np.int32),
            n_tokens=n_tokens,
            covered=covered,
        )

    def _forward_windows(
        self,
        token_ids: Sequence[np.ndarray],
        windows: Windows,
        lengths: np.ndarray,
        on_batch: Callable[[int], None] | None,
    ) -> np.ndarray:
        import torch

        hidden = self.teacher.hidden
        pooled = np.zeros((len(lengths), hidden), dtype=np.float32)
        if len(lengths) == 0:
            return pooled
        # Longest first: a batch that runs out of memory does so at once, not at the end.
        order = np.lexsort((np.arange(len(lengths)), -lengths))
        sorted_lengths = lengths[order]
        budget = self.batch_tokens
        results: list[tuple[np.ndarray, Any]] = []
        position = 0
        while position < len(order):
            _, stop = pack_batches(sorted_lengths, budget, position)
            batch = order[position:stop]
            try:
                out = self._forward_batch(token_ids, windows, lengths, batch)
            except torch.OutOfMemoryError:
                out = None  # handled below, once the exception (and its frames) are released
            if out is None:
                longest = int(sorted_lengths[position])
                if stop - position == 1:
                    raise ModelError(
                        f"one window of {longest} tokens does not fit in GPU memory; "
                        "use a smaller --window or a bigger GPU"
                    )
                budget = max(longest, budget // 2)
                self.stats.oom_retries += 1
                self.stats.budgets.append(budget)
                log.warning("CUDA out of memory: batch budget halved to %d tokens", budget)
                torch.cuda.empty_cache()
                continue
            results.append((batch, out))
            real = int(lengths[batch].sum())
            self.stats.batches += 1
            self.stats.windows += len(batch)
            self.stats.real_tokens += real
            self.stats.padded_tokens += len(batch) * int(sorted_lengths[position])
            position = stop
            if on_batch is not None:
                on_batch(real)
        # One device->host copy per call instead of a sync per batch.
        for batch, out in results:
            pooled[batch] = out.float().cpu().numpy()
        return pooled

    def _forward_batch(
        self,
        token_ids: Sequence[np.ndarray],
        windows: Windows,
        lengths: np.ndarray,
        batch: np.ndarray,
    ) -> Any:
        import torch

        teacher = self.teacher
        width = int(lengths[batch].max())
        ids = np.full((len(batch), width), teacher.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        prefix, suffix = teacher.prefix, teacher.suffix
        for row, w in enumerate(batch.tolist()):
            content = token_ids[windows.item[w]][windows.start[w] : windows.end[w]]
            n = int(lengths[w])
            ids[row, : len(prefix)] = prefix
            ids[row, len(prefix) : len(prefix) + len(content)] = content
            ids[row, len(prefix) + len(content) : n] = suffix
            mask[row, :n] = 1
        device = teacher.device
        cuda = device.startswith("cuda")
        ids_t = torch.from_numpy(ids)
        mask_t = torch.from_numpy(mask)
        if cuda:
            ids_t = ids_t.pin_memory()
            mask_t = mask_t.pin_memory()
        ids_t = ids_t.to(device, non_blocking=True)
        mask_t = mask_t.to(device, non_blocking=True)
        # Padding sits on the right: in a causal model no real token attends to it, so the
        # mask changes nothing the pooling reads, and without one sdpa runs its flash kernel
        # (H200, GenomeOcean-500M shape: masked batches ran at a third of the unmasked speed).
        unmasked = self.causal or bool((lengths[batch] == width).all())
        with torch.inference_mode():
            output = teacher.model(
                input_ids=ids_t,
                attention_mask=None if unmasked else mask_t,
                use_cache=False,
                output_hidden_states=self.layer != -1,
            )
            states = (
                output.last_hidden_state if self.layer == -1 else output.hidden_states[self.layer]
            )
            if self.pooling == "last":
                last = mask_t.sum(1) - 1
                return states[torch.arange(len(batch), device=states.device), last].float()
            weights = mask_t.to(states.dtype).unsqueeze(-1)
            # Multiplying by a 0/1 mask is exact; the sum accumulates in float32.
            total = (states * weights).sum(1, dtype=torch.float32)
            return total / mask_t.sum(1, keepdim=True).to(torch.float32)


def causal_attention(model: Any) -> bool:
    """Whether every attention layer of ``model`` is causal (GenomeOcean's Mistral layers are).

    Read from the layers' own ``is_causal`` flags; a model that has none, or any
    bidirectional layer, counts as not causal and keeps its padding mask.
    """
    flags = [
        bool(module.is_causal)
        for module in model.modules()
        if "Attention" in type(module).__name__ and hasattr(module, "is_causal")
    ]
    return bool(flags) and all(flags)


def combine(pooled: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Weighted mean of each contig's window vectors (float64 sums, exact for one window)."""
    n = len(offsets) - 1
    out = np.zeros((n, pooled.shape[1]), dtype=np.float32)
    counts = np.diff(offsets)
    single = counts == 1
    out[single] = pooled[offsets[:-1][single]]
    for i in np.nonzero(counts > 1)[0].tolist():
        a, b = int(offsets[i]), int(offsets[i + 1])
        w = weights[a:b].astype(np.float64)
        out[i] = (pooled[a:b].astype(np.float64) * w[:, None]).sum(0) / w.sum()
    return out
