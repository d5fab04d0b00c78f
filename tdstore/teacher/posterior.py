"""Soft labels that use both the teacher and the noisy label: the posterior of the true leaf.

The cross-fitted teacher gives ``q`` (a distribution over leaves) for a contig; its noisy
label ``y`` covers the leaf range ``S = [lo, hi)`` (a truncated lineage covers several
leaves). Model: with probability ``1 - noise`` the label is right (the true leaf is in S),
otherwise it is a random node, which covers a random leaf with probability
``u = |S| / L``. Then the posterior of the true leaf is a mixture::

    pi = (1 - noise) q(S) / ((1 - noise) q(S) + noise u)      # P(label right | q, y)
    posterior = pi * q restricted to S + (1 - pi) * q

so a species label the teacher does not contradict becomes (nearly) one-hot, a genus
label becomes the teacher's split of the genus into its species, and a label the teacher
confidently rejects hands its mass back to the teacher. ``noise`` is fitted by maximum
likelihood of the observed labels under the teacher (``fit_label_noise``)::

    noise = fit_label_noise(label_mass(q, lo, hi), (hi - lo) / q.shape[1])
    targets = label_posterior(q, lo, hi, noise)
"""

from __future__ import annotations

import numpy as np

# Bounds of the fitted noise rate: 0 would make a label the teacher rejects impossible.
MIN_NOISE = 1e-4
MAX_NOISE = 1.0 - 1e-4
# A mean P(label right) at or above this means the posterior keeps (nearly) every label:
# a species label's soft label is then one-hot on it, and distilling it on those rows adds
# nothing the hard loss does not (the 200k benchmark's k-mer teacher: 1.000).
COPIES_LABELS = 0.99


def label_mass(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """q(S): the teacher's probability of each row's label node (leaf range [lo, hi))."""
    cumulative = np.zeros((q.shape[0], q.shape[1] + 1), dtype=np.float64)
    np.cumsum(q, axis=1, out=cumulative[:, 1:])
    rows = np.arange(q.shape[0])
    return np.clip(cumulative[rows, hi] - cumulative[rows, lo], 0.0, 1.0)


def fit_label_noise(mass: np.ndarray, chance: np.ndarray, iterations: int = 80) -> float:
    """Maximum-likelihood noise rate of labels with teacher mass ``mass`` and chance ``u``.

    The log-likelihood sum(log((1 - e) m + e u)) is concave in e, so its derivative
    sum((u - m) / ((1 - e) m + e u)) falls monotonically: bisection finds the root.
    """
    mass = np.asarray(mass, dtype=np.float64)
    chance = np.asarray(chance, dtype=np.float64)
    if mass.size == 0:
        return MIN_NOISE

    def slope(e: float) -> float:
        return float(np.sum((chance - mass) / np.maximum((1 - e) * mass + e * chance, 1e-300)))

    lo, hi = MIN_NOISE, MAX_NOISE
    if slope(lo) <= 0:
        return lo
    if slope(hi) >= 0:
        return hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def label_posterior(
    q: np.ndarray, lo: np.ndarray, hi: np.ndarray, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """(posterior (n, L), pi (n,)): the true-leaf posterior given teacher ``q`` and label.

    Rows whose label is the root (lo = 0, hi = L) come back unchanged (pi = 1, S = all).
    """
    n, n_leaves = q.shape
    mass = label_mass(q, lo, hi)
    chance = (hi - lo) / n_leaves
    right = (1.0 - noise) * mass
    pi = right / np.maximum(right + noise * chance, 1e-300)
    pi[hi - lo >= n_leaves] = 1.0  # a root label cannot be wrong (and changes nothing)
    leaf = np.arange(n_leaves)[None, :]
    inside = (leaf >= lo[:, None]) & (leaf < hi[:, None])
    # q restricted to S; where the teacher gives S no mass at all, uniform over S.
    restricted = np.where(inside, q, 0.0)
    empty = mass <= 0
    if empty.any():
        restricted[empty] = inside[empty] / np.maximum(hi[empty] - lo[empty], 1)[:, None]
    restricted /= np.where(empty, 1.0, mass)[:, None]
    posterior = pi[:, None] * restricted + (1.0 - pi)[:, None] * q
    return posterior, pi
