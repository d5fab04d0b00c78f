"""Make the student's scores mean something: per-rank calibration on held-out labels.

For each rank, a logistic model maps signals of one predicted node to the
probability that the label source agrees with it on held-out contigs:
``logit(raw node probability)``, ``logit(P(label reaches this rank))`` from the
depth probe (contigs of species absent from the reference get genus labels only,
so the probe learns where species calls are never confirmed), and, where a teacher
is stored, ``logit(teacher probability of the same node)`` (cross-fitted teacher
confidence and teacher-student disagreement in one number)::

    cal = fit_calibration(signals, chain_taxa, label_ranks)
    scores = cal.apply(signals)          # (n, 7), non-increasing along each lineage

A held-out label that stops short of a rank is left out of that rank's fit (see
``agreement``), so the fit never shows a call on a taxon the reference lacks to be
wrong; a second factor, the reach gate, reads the depth probe alone: see
``KNOWN_REACH`` (above species) and ``SPECIES_REACH``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tdstore.taxonomy import RANKS

_EPS = 1e-6
SPECIES_COLUMN = len(RANKS) - 1
MIN_ROWS = 30  # fewer held-out calls at a rank (or a single class) -> keep raw scores there
# The reach gate above species. A label search reaches a taxon the reference holds for
# most of its contigs, and one it lacks only by a wrong call. So where the depth probe
# says fewer than KNOWN_REACH of a contig's look-alikes have labels reaching a rank, its
# taxon there is likely missing from the reference, and the call a guess: each score
# above species is multiplied by min(1, P(label reaches the rank) / KNOWN_REACH), a
# straight line from "never reached" (novel) to "reached as often as a known taxon is".
# 200k benchmark, plain student, seed 0: wrong genus calls 11,763 -> 4,828 (almost all on
# novel genera: Taxometer's novel-species problem one rank up), genus recall unchanged;
# three seeds: genus F1 0.9322 -> 0.9491, family 0.9860 -> 0.9923 (benchmarks/RESULTS.md).
KNOWN_REACH = 0.5
# The same gate at species, with the species calibrator fitted on labels that reach
# species only. There known species' labels reach species for most contigs (about 0.9
# of them) and a novel species' labels by a wrong call to a relative only: the divisor
# sits higher than above species, where novel species of known genera lower the reach
# of rightly called genera to about 0.7. The earlier species calibration (a short label
# counted against the call) held back right species calls on known species where their
# look-alikes' labels stop short: demo, plain, refit-free run: species F1 0.801 -> 0.818,
# known species 0.946 -> 0.971 (Taxometer's raw scores 0.970), wrong species calls on
# novel species 0.027 -> 0.083 (labels 0.338); 200k: 0.823 -> 0.837, 0.969 -> 0.991,
# 0.048 -> 0.115 (labels 0.330). Divisors 0.5 / 0.6 / 0.7 were tried: with 0.5 wrong
# species calls on novel species are as frequent as in the labels (demo 0.317); 0.7
# keeps the most of both goals. ``species_reach=None`` (``--species-reach-gate 0``) fits
# the earlier species calibration.
SPECIES_REACH = 0.7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class Signals:
    """(n, 7) per-rank signals of each contig's predicted chain; NaN where no node."""

    raw: np.ndarray
    depth: np.ndarray
    teacher: np.ndarray | None = None  # NaN rows: no teacher for that contig

    def subset(self, rows: np.ndarray) -> Signals:
        return Signals(
            self.raw[rows], self.depth[rows], None if self.teacher is None else self.teacher[rows]
        )


def _design(signals: Signals, rank: int, use_teacher: bool) -> np.ndarray:
    columns = [logit(signals.raw[:, rank]), logit(signals.depth[:, rank])]
    if use_teacher:
        assert signals.teacher is not None
        columns.append(logit(signals.teacher[:, rank]))
    columns.append(np.ones(signals.raw.shape[0]))
    return np.stack(columns, axis=1)


def _fit_logistic(design: np.ndarray, target: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Newton-Raphson logistic regression with a small ridge (no sklearn needed)."""
    coef = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2 * design.shape[0])
    penalty[-1] = 0.0  # intercept not penalised
    for _ in range(50):
        z = design @ coef
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))
        gradient = design.T @ (p - target) + penalty * coef
        weight = p * (1 - p) + 1e-9
        hessian = (design * weight[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if np.abs(step).max() < 1e-8:
            break
    return coef


@dataclass
class Calibration:
    """Per rank and variant ('base' or 'teacher'): logistic coefficients, or None = raw.

    ``known_reach``: the reach gate's divisor (``KNOWN_REACH``); None = no gate, as in
    runs calibrated before it existed, whose stored scores must not change on re-predict.
    ``species_reach``: the same at species (``SPECIES_REACH``); None = the species
    calibrator itself counted short labels against the call (``agreement``).
    """

    coefs: dict[str, list[list[float] | None]] = field(default_factory=dict)
    ceilings: dict[str, list[float]] = field(default_factory=dict)
    support: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    known_reach: float | None = None
    species_reach: float | None = None

    def apply(self, signals: Signals) -> np.ndarray:
        n = signals.raw.shape[0]
        out = np.where(np.isnan(signals.raw), np.nan, signals.raw).astype(np.float64)
        has_teacher = np.zeros(n, dtype=bool)
        if signals.teacher is not None and "teacher" in self.coefs:
            has_teacher = ~np.isnan(signals.teacher).all(axis=1)
        for variant, rows in (("base", ~has_teacher), ("teacher", has_teacher)):
            coefs = self.coefs.get(variant)
            if coefs is None or not rows.any():
                continue
            sub = signals.subset(np.flatnonzero(rows))
            for rank, coef in enumerate(coefs):
                if coef is None:
                    continue
                present = ~np.isnan(sub.raw[:, rank])
                if sub.teacher is not None:
                    sub.teacher[:, rank] = np.nan_to_num(sub.teacher[:, rank], nan=0.0)
                z = _design(sub, rank, variant == "teacher") @ np.asarray(coef)
                values = 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))
                ceiling = self.ceilings.get(variant, [1.0] * len(RANKS))[rank]
                values = np.minimum(1.0, values / ceiling)
                target = np.flatnonzero(rows)[present]
                out[target, rank] = values[present]
        if self.known_reach is not None:
            out[:, :SPECIES_COLUMN] *= reach_factor(
                signals.depth[:, :SPECIES_COLUMN], self.known_reach
            )
        if self.species_reach is not None:
            out[:, SPECIES_COLUMN] *= reach_factor(
                signals.depth[:, SPECIES_COLUMN], self.species_reach
            )
        return monotone(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "logistic-per-rank",
            "coefs": self.coefs,
            "ceilings": self.ceilings,
            "support": self.support,
            "known_reach": self.known_reach,
            "species_reach": self.species_reach,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        return cls(
            coefs=data.get("coefs", {}),
            ceilings=data.get("ceilings", {}),
            support=data.get("support", {}),
            known_reach=data.get("known_reach"),
            species_reach=data.get("species_reach"),
        )


def reach_factor(depth: np.ndarray, divisor: float) -> np.ndarray:
    """min(1, P(label reaches the rank) / divisor); 1 where the probe gave nothing."""
    factor = np.clip(np.asarray(depth, dtype=np.float64) / divisor, 0.0, 1.0)
    return np.where(np.isnan(factor), 1.0, factor)


def monotone(scores: np.ndarray) -> np.ndarray:
    """A child cannot be more certainly right than its parent: running minimum down the chain."""
    out = scores.copy()
    for rank in range(1, out.shape[1]):
        out[:, rank] = np.fmin(out[:, rank], out[:, rank - 1])
        out[np.isnan(scores[:, rank]), rank] = np.nan
    return out


def agreement(
    chain_taxa: np.ndarray, label_ranks: np.ndarray, *, short_species_counts: bool = True
) -> np.ndarray:
    """(n, 7) 1.0 where the predicted node equals the label's node at that rank, else 0.0.

    With ``short_species_counts``, a label that stops above species does not confirm a
    species call (0): species absent from the reference get genus labels, and their
    species calls must not look confirmed. Without it (the species reach gate does
    that job) such a label is left out at species too. Above species, a label that
    stops short says nothing about the call (NaN, left out of the fit): there an LCA
    label stops where reference genomes of several taxa matched, which is no evidence
    against a call. Counting it as disagreement withheld correct genus calls (demo,
    plain student: genus F1 0.934 vs 0.951 when left out; species unchanged). NaN also
    where the chain has no node.
    """
    agree = (chain_taxa == label_ranks) & (chain_taxa >= 0)
    out = agree.astype(np.float64)
    out[chain_taxa < 0] = np.nan
    silent_to = len(RANKS) if not short_species_counts else SPECIES_COLUMN
    silent = label_ranks[:, :silent_to] < 0
    out[:, :silent_to][silent] = np.nan
    return out


def _ceiling(z: np.ndarray, target: np.ndarray, top: float = 0.2) -> float:
    """How often the label source agrees where the student is most surely right.

    Even there labels are sometimes truncated or wrong; agreement then understates
    correctness by that factor (label errors independent of the student's), so the
    fitted probabilities are divided by it (at most 1). Taken over the top ``top``
    share of held-out rows by fitted score.
    """
    n = max(MIN_ROWS, int(top * z.size))
    best = np.argsort(-z, kind="stable")[:n]
    return float(np.clip(target[best].mean(), 0.5, 1.0))


def fit_calibration(
    signals: Signals,
    chain_taxa: np.ndarray,
    label_ranks: np.ndarray,
    *,
    known_reach: float | None = KNOWN_REACH,
    species_reach: float | None = SPECIES_REACH,
) -> Calibration:
    """Fit per-rank calibrators on held-out rows that have a label (not unclassified).

    ``known_reach`` / ``species_reach``: the reach gates' divisors above and at species,
    None for no gate.
    """
    labelled = label_ranks[:, 0] >= 0
    target = agreement(chain_taxa, label_ranks, short_species_counts=species_reach is None)
    calibration = Calibration(known_reach=known_reach, species_reach=species_reach)
    variants = [("base", np.ones(len(labelled), dtype=bool))]
    if signals.teacher is not None:
        with_teacher = ~np.isnan(signals.teacher).all(axis=1)
        if with_teacher.sum() >= MIN_ROWS:
            variants.append(("teacher", with_teacher))
    for variant, rows in variants:
        coefs: list[list[float] | None] = []
        ceilings: list[float] = []
        support: list[dict[str, int]] = []
        for rank in range(len(RANKS)):
            use = rows & labelled & ~np.isnan(target[:, rank])
            y = target[use, rank]
            positives = int(y.sum())
            support.append({"rows": int(use.sum()), "agree": positives})
            if use.sum() < MIN_ROWS or positives == 0 or positives == use.sum():
                coefs.append(None)
                ceilings.append(1.0)
                continue
            sub = signals.subset(np.flatnonzero(use))
            if sub.teacher is not None:
                sub.teacher = np.nan_to_num(sub.teacher, nan=0.0)
            design = _design(sub, rank, variant == "teacher")
            coef = _fit_logistic(design, y)
            coefs.append(coef.tolist())
            ceilings.append(_ceiling(design @ coef, y))
        calibration.coefs[variant] = coefs
        calibration.ceilings[variant] = ceilings
        calibration.support[variant] = support
    return calibration
