"""From leaf probabilities to a predicted lineage and its per-rank signals, chunk by chunk.

The lineage is the greedy chain: from the root, the most probable child at every
rank down to a leaf. Cutting it where the node probability drops to 0.5 or below
gives exactly Taxometer's "every node above 0.5"::

    chain, raw = chain_scores(hierarchy, leaf_probs)     # (n, 7) node indices, scores
    taxa = taxon_matrix(hierarchy, chain)                  # (n, 7) taxon ids, -1 = none
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from tdstore.student.network import StudentNet, depth_at_least
from tdstore.taxonomy import Hierarchy


@torch.no_grad()
def infer(
    model: StudentNet, x: np.ndarray | torch.Tensor, *, device: str = "cpu", chunk: int = 4096
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (start row, leaf probabilities (b, L) float64, P(depth >= rank) (b, 7))."""
    model.eval()
    for start in range(0, x.shape[0], chunk):
        batch = torch.as_tensor(np.asarray(x[start : start + chunk], dtype=np.float32))
        logits, depth_logits = model(batch.to(device))
        probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
        yield start, probs, depth_at_least(depth_logits).double().cpu().numpy()


def chain_scores(hierarchy: Hierarchy, leaf_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chain node indices (n, 7), -1 = none; raw node probabilities (n, 7), NaN = none)."""
    node_probs = hierarchy.node_probabilities(leaf_probs)
    chain = hierarchy.predict_chain(node_probs, threshold=-1.0)
    raw = np.full(chain.shape, np.nan)
    present = chain >= 0
    rows = np.nonzero(present)[0]
    raw[present] = node_probs[rows, chain[present]]
    # Rounding in sums of floats can overshoot 1 a hair; Taxometer clips too.
    return chain, np.clip(raw, 0.0, 1.0)


def taxon_matrix(hierarchy: Hierarchy, chain: np.ndarray) -> np.ndarray:
    return np.where(chain >= 0, hierarchy.node_ids[np.maximum(chain, 0)], -1)


def teacher_node_probs(
    hierarchy: Hierarchy,
    chain: np.ndarray,
    index: np.ndarray,
    prob: np.ndarray,
    rest: np.ndarray,
    present: np.ndarray,
) -> np.ndarray:
    """(n, 7) the teacher's probability of each node of the student's chain (NaN: no teacher).

    Listed (top-k) leaves inside the node's leaf range count fully; the rest mass is
    spread evenly over the unlisted leaves, as in distillation.
    """
    n_leaves = hierarchy.n_leaves
    listed = prob > 0
    n_other = np.maximum(n_leaves - listed.sum(1), 1)
    out = np.full(chain.shape, np.nan)
    for rank in range(chain.shape[1]):
        nodes = chain[:, rank]
        ok = nodes >= 0
        start = hierarchy.start[np.maximum(nodes, 0)][:, None]
        end = hierarchy.end[np.maximum(nodes, 0)][:, None]
        inside = listed & (index >= start) & (index < end)
        mass = (prob * inside).sum(1)
        unlisted_inside = (end[:, 0] - start[:, 0]) - inside.sum(1)
        mass = mass + rest * unlisted_inside / n_other
        out[ok, rank] = np.clip(mass[ok], 0.0, 1.0)
    out[~present] = np.nan
    return out
