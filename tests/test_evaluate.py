"""Evaluation metrics on hand-made cases with hand-computed precision, recall and F1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tdstore.evaluate import grouped_counts, per_rank_metrics, rates, reliability, threshold_sweep

# Columns: domain, phylum, class, order, family, genus, species; -1 = no node at that rank.
FULL = [1, 2, 3, 4, 5, 6, 7]
GOLD = np.array(
    [
        FULL,  # a: called right all the way
        FULL,  # b: wrong species
        [1, 2, 3, 4, 5, 6, -1],  # c: gold is an inner node (genus); a species call is not counted
        [1, 2, 3, 4, 5, 9, 10],  # d: the call stops at family
        FULL,  # e: species score exactly at the threshold: no call
        [1, 2, 3, 4, 11, 12, 13],  # f: wrong from family down
    ]
)
PRED = np.array(
    [
        FULL,
        [1, 2, 3, 4, 5, 6, 8],
        FULL,
        [1, 2, 3, 4, 5, -1, -1],
        FULL,
        [1, 2, 3, 4, 14, 15, 16],
    ]
)
SCORES = np.full(PRED.shape, 0.9, dtype=np.float32)
SCORES[2] = 0.95
SCORES[3, :5] = 0.99
SCORES[3, 5:] = np.nan
SCORES[4, 5] = 0.81
SCORES[4, 6] = 0.8  # float32(0.8) is not > 0.8


def test_hand_computed_ranks():
    m = per_rank_metrics(PRED, SCORES, GOLD, 0.8)
    for rank in ("domain", "phylum", "class", "order"):
        assert m[rank] == {
            "n_contigs": 6,
            "n_gold": 6,
            "correct": 6,
            "wrong": 0,
            "unassigned": 0,
            "overcalled": 0,
            "precision": 1.0,
            "recall": 1.0,
            "f1": 1.0,
        }
    family = m["family"]
    assert (family["correct"], family["wrong"], family["unassigned"]) == (5, 1, 0)
    assert family["precision"] == pytest.approx(5 / 6)
    assert family["f1"] == pytest.approx(5 / 6)
    genus = m["genus"]
    assert (genus["n_gold"], genus["correct"], genus["wrong"], genus["unassigned"]) == (6, 4, 1, 1)
    assert genus["precision"] == pytest.approx(0.8)
    assert genus["recall"] == pytest.approx(4 / 6)
    assert genus["f1"] == pytest.approx(8 / 11)
    species = m["species"]
    # c has no gold species (not counted; its call is "overcalled"); e's score equals the threshold.
    assert species["n_gold"] == 5
    assert (species["correct"], species["wrong"], species["unassigned"]) == (1, 2, 2)
    assert species["overcalled"] == 1
    assert species["precision"] == pytest.approx(1 / 3)
    assert species["recall"] == pytest.approx(1 / 5)
    assert species["f1"] == pytest.approx(0.25)


def test_threshold_is_strict_in_float64_too():
    scores = SCORES.astype(np.float64)
    scores[4, 6] = np.float32(0.8)  # what a float32 column holds, read as float64
    assert per_rank_metrics(PRED, scores, GOLD, 0.8)["species"]["unassigned"] == 2
    # A lower threshold turns e's species into a correct call.
    assert per_rank_metrics(PRED, SCORES, GOLD, 0.79)["species"]["correct"] == 2


def test_no_calls_and_all_wrong():
    gold = np.array([FULL, FULL])
    nothing = np.full_like(gold, -1)
    m = per_rank_metrics(nothing, np.full(gold.shape, np.nan), gold, 0.5)["species"]
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["unassigned"] == 2
    wrong = np.array([[1, 2, 3, 4, 5, 6, 99]] * 2)
    m = per_rank_metrics(wrong, np.ones(gold.shape), gold, 0.5)["species"]
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    # No gold at a rank at all: recall and F1 are undefined, calls there are overcalls.
    shallow = np.array([[1, -1, -1, -1, -1, -1, -1]])
    m = per_rank_metrics(np.array([FULL]), np.ones((1, 7)), shallow, 0.5)["genus"]
    assert m["n_gold"] == 0 and m["overcalled"] == 1
    assert math.isnan(m["recall"]) and math.isnan(m["f1"])


def test_rates_edge_cases():
    p, r, f1 = rates(np.array([0, 3, 0]), np.array([0, 1, 2]), np.array([0, 6, 5]))
    assert math.isnan(p[0]) and math.isnan(r[0]) and math.isnan(f1[0])
    assert (p[1], r[1]) == (0.75, 0.5)
    assert f1[1] == pytest.approx(0.6)
    assert (p[2], r[2], f1[2]) == (0.0, 0.0, 0.0)


def test_grouped_counts_match_subsets():
    rng = np.random.default_rng(0)
    n = 400
    gold = rng.integers(0, 4, size=(n, 7))
    gold[rng.random((n, 7)) < 0.2] = -1
    pred = np.where(rng.random((n, 7)) < 0.7, gold, rng.integers(0, 4, size=(n, 7)))
    pred[rng.random((n, 7)) < 0.1] = -1
    scores = rng.random((n, 7)).astype(np.float32)
    codes = rng.integers(-1, 3, size=n)  # -1: in no group
    grouped = grouped_counts(pred, scores, gold, 0.3, codes, 3)
    for g in range(3):
        sel = codes == g
        alone = per_rank_metrics(pred[sel], scores[sel], gold[sel], 0.3)
        for r, rank in enumerate(alone):
            for name in ("n_contigs", "n_gold", "correct", "wrong", "unassigned", "overcalled"):
                assert grouped[name][g, r] == alone[rank][name]


def test_threshold_sweep_matches_per_threshold():
    rng = np.random.default_rng(1)
    n = 300
    gold = rng.integers(-1, 5, size=n)
    pred = np.where(rng.random(n) < 0.6, gold, rng.integers(-1, 5, size=n))
    scores = rng.random(n).astype(np.float32)
    scores[:5] = np.float32(0.7)  # ties exactly at a swept threshold
    scores[5:8] = np.nan
    sweep = threshold_sweep(pred, scores, gold, [0.5, 0.7, 0.9])
    for j, t in enumerate([0.5, 0.7, 0.9]):
        counts = grouped_counts(
            np.tile(pred[:, None], 7), np.tile(scores[:, None], 7), np.tile(gold[:, None], 7), t
        )
        assert sweep["correct"][j] == counts["correct"][0, 0]
        assert sweep["wrong"][j] == counts["wrong"][0, 0]
        assert sweep["n_gold"][j] == counts["n_gold"][0, 0]


def test_reliability_bins():
    gold = np.array([1, 1, 1, 1, -1])
    pred = np.array([1, 2, 1, -1, 1])  # last two: no call / no gold, both ignored
    scores = np.array([0.95, 0.95, 0.15, 0.9, 0.9])
    rel = reliability(pred, scores, gold, n_bins=10)
    assert rel["n"].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert rel["accuracy"][9] == 0.5 and rel["mean_score"][9] == pytest.approx(0.95)
    assert rel["accuracy"][1] == 1.0
    assert rel["ece"] == pytest.approx((2 * 0.45 + 0.85) / 3)
    # A score of exactly 1.0 lands in the last bin.
    assert reliability([1], [1.0], [1])["n"][-1] == 1
