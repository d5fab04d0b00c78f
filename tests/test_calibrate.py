"""Per-rank calibration of the student's scores: targets, monotonicity, fitted probabilities."""

from __future__ import annotations

import numpy as np

from tdstore.student.calibrate import (
    KNOWN_REACH,
    SPECIES_REACH,
    Calibration,
    Signals,
    agreement,
    fit_calibration,
    logit,
    monotone,
)


def test_agreement_targets():
    full = [1, 2, 3, 4, 5, 6, 7]
    chain = np.array([full, full, full, [1, 2, 3, 4, 5, 6, -1]])
    labels = np.array(
        [
            full,  # agrees everywhere
            [1, 2, 3, 4, 5, 9, 10],  # another genus
            [1, 2, 3, 4, -1, -1, -1],  # stops at order: says nothing at family/genus
            full,
        ]
    )
    target = agreement(chain, labels)
    assert target[0].tolist() == [1.0] * 7
    assert target[1].tolist() == [1.0] * 5 + [0.0, 0.0]
    # above species a short label is left out; at species it counts against the call
    assert target[2, :4].tolist() == [1.0] * 4
    assert np.isnan(target[2, 4:6]).all() and target[2, 6] == 0.0
    assert np.isnan(target[3, 6])  # no species in the chain


def test_monotone_running_minimum_keeps_missing_ranks():
    scores = np.array([[0.9, 0.95, 0.7, 0.8, np.nan, np.nan, np.nan]])
    out = monotone(scores)
    np.testing.assert_allclose(out[0, :4], [0.9, 0.9, 0.7, 0.7])
    assert np.isnan(out[0, 4:]).all()


def test_fitted_scores_track_how_often_labels_agree():
    """Synthetic calls right with probability sigmoid(logit(raw) - 1): calibration finds it."""
    rng = np.random.default_rng(0)
    n = 20000
    raw = np.full((n, 7), 0.999)
    raw[:, 6] = rng.uniform(0.5, 0.999, size=n)
    depth = np.full((n, 7), 0.99)
    truth = 1 / (1 + np.exp(-(logit(raw[:, 6]) - 1.0)))
    right = rng.random(n) < truth
    chain = np.tile(np.arange(1, 8), (n, 1))
    labels = chain.copy()
    labels[~right, 6] = 99
    cal = fit_calibration(Signals(raw, depth), chain, labels)
    scores = cal.apply(Signals(raw, depth))
    # Scores are agreement rates divided by the labels' agreement where the student is
    # surest (here labels are never wrong, so that ceiling only rescales): undo it.
    ceiling = cal.ceilings["base"][6]
    assert 0.8 < ceiling < 1.0
    expected = np.minimum(1.0, truth / ceiling)
    assert np.abs(scores[:, 6] - expected).mean() < 0.02
    assert (np.diff(scores, axis=1) <= 1e-12).all()  # never more sure of a child
    again = Calibration.from_dict(cal.to_dict()).apply(Signals(raw, depth))
    np.testing.assert_array_equal(again, scores)


def test_species_calls_withheld_where_labels_stop_at_genus():
    """The depth signal: contigs whose labels never reach species lose their species score."""
    rng = np.random.default_rng(1)
    n = 4000
    novel = rng.random(n) < 0.3
    raw = np.full((n, 7), 0.99)
    depth = np.where(novel[:, None], 0.05, 0.98) * np.ones((1, 7))
    depth[:, :6] = 0.99
    chain = np.tile(np.arange(1, 8), (n, 1))
    labels = chain.copy()
    labels[novel, 6] = -1  # genus-level labels for the novel species
    scores = fit_calibration(Signals(raw, depth), chain, labels).apply(Signals(raw, depth))
    assert scores[novel, 6].max() < 0.5 and scores[~novel, 6].min() > 0.9
    assert scores[novel, 5].min() > 0.9  # their genus calls stand


def test_reach_gate_withholds_calls_on_taxa_the_labels_never_reach():
    """Above species a short label says nothing, so only the depth probe can stop a genus call.

    Contigs of a genus missing from the reference: labels stop at family for most, and
    the rest name the closest known relative's genus, which the student follows (so the
    held-out labels agree with its calls). Known genera's labels reach the genus for most
    contigs; novel species of known genera for about two thirds of them.
    """
    rng = np.random.default_rng(2)
    n = 6000
    group = rng.choice(3, size=n, p=[0.7, 0.15, 0.15])  # known, novel species, novel genus
    reach_genus = np.array([0.93, 0.68, 0.28])[group]
    raw = np.full((n, 7), 0.999)
    depth = np.full((n, 7), 0.97)
    depth[:, 5] = reach_genus
    depth[:, 6] = np.array([0.9, 0.3, 0.25])[group]
    chain = np.tile(np.arange(1, 8), (n, 1))
    labels = chain.copy()
    short = rng.random(n) > reach_genus
    labels[short, 5:] = -1
    labels[(group > 0) & ~short, 6] = 99  # novel: a relative's species, the call's genus
    cal = fit_calibration(Signals(raw, depth), chain, labels)
    assert cal.known_reach == KNOWN_REACH
    scores = cal.apply(Signals(raw, depth))
    assert scores[group == 2, 5].max() < 0.8  # genus withheld for the novel genus
    assert scores[group < 2, 5].min() > 0.95  # and kept for known genera
    assert scores[:, 4].min() > 0.95  # family calls stand: their labels reach family
    expected = np.minimum(1.0, 0.28 / KNOWN_REACH)
    np.testing.assert_allclose(scores[group == 2, 5], expected * scores[group == 2, 4], rtol=0.05)
    # The factor is what the gate adds: without it the fitted scores would call them all.
    ungated = Calibration.from_dict({**cal.to_dict(), "known_reach": None})
    assert ungated.apply(Signals(raw, depth))[group == 2, 5].min() > 0.95


def test_runs_calibrated_before_the_gate_keep_their_scores():
    raw = np.full((3, 7), 0.99)
    depth = np.array([[0.99] * 7, [0.99] * 5 + [0.1, 0.1], [0.99] * 4 + [np.nan] * 3])
    old = Calibration.from_dict({"coefs": {}, "ceilings": {}})  # a stored calibration without it
    assert old.known_reach is None and old.species_reach is None
    np.testing.assert_array_equal(old.apply(Signals(raw, depth)), raw)
    gated = Calibration(known_reach=KNOWN_REACH).apply(Signals(raw, depth))
    np.testing.assert_allclose(gated[1], [0.99] * 5 + [0.99 * 0.2] * 2)
    np.testing.assert_array_equal(gated[0], raw[0])
    np.testing.assert_array_equal(gated[2], raw[2])  # no probe value: no gate
    assert Calibration.from_dict(Calibration(known_reach=0.5).to_dict()).known_reach == 0.5


def test_species_gate_keeps_known_species_whose_labels_often_stop_short():
    """Known species whose look-alikes' labels stop at genus a third of the time keep their
    species calls with the species gate; counting short labels against them withholds them.
    Novel species (their labels reach species only by a wrong call to a relative) lose it
    either way.
    """
    rng = np.random.default_rng(4)
    n = 6000
    group = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])  # known, known + often short, novel
    reach = np.array([0.92, 0.66, 0.3])[group]
    raw = np.full((n, 7), 0.999)
    depth = np.full((n, 7), 0.97)
    depth[:, 6] = reach
    chain = np.tile(np.arange(1, 8), (n, 1))
    labels = chain.copy()
    short = rng.random(n) > reach
    labels[short, 6] = -1
    labels[(group == 2) & ~short, 6] = 99  # the relative the student does not call
    labels[(group == 2) & ~short & (rng.random(n) < 0.85), 6] = 7  # ... or does (closest)
    assert (agreement(chain, labels)[short, 6] == 0).all()
    assert np.isnan(agreement(chain, labels, short_species_counts=False)[short, 6]).all()
    gated = fit_calibration(Signals(raw, depth), chain, labels)
    assert gated.species_reach == SPECIES_REACH
    scores = gated.apply(Signals(raw, depth))
    assert scores[group < 2, 6].min() > 0.8  # both known groups called
    assert scores[group == 2, 6].max() < 0.5  # novel species stop at genus
    earlier = fit_calibration(Signals(raw, depth), chain, labels, species_reach=None)
    assert earlier.species_reach is None
    old = earlier.apply(Signals(raw, depth))
    assert old[group == 1, 6].max() < 0.8  # the often-short known species are withheld
    assert old[group == 2, 6].max() < 0.5
