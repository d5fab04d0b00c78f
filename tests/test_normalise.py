from __future__ import annotations

import numpy as np
import pytest

from tdstore.features.normalise import NormalisationStats


def test_taxometer_normalisation_by_hand():
    tnf = np.array([[1.0, 0.0], [3.0, 2.0]])
    abundance = np.array([[1.0, 0.0], [1.0, 2.0]])
    stats = NormalisationStats.fit(tnf, abundance)
    x = stats.transform(tnf, abundance)
    # columns scaled to 1e6: [[5e5, 0], [5e5, 1e6]]; rows normalised to sum 1
    assert x[:, :2] == pytest.approx(np.array([[1.0, 0.0], [1 / 3, 2 / 3]]), abs=1e-6)
    assert x[:, 2:4] == pytest.approx(np.array([[-1.0, -1.0], [1.0, 1.0]]))
    log_total = np.log([5e5, 1.5e6])
    z = (log_total - log_total.mean()) / log_total.std()
    assert x[:, 4] == pytest.approx(z, abs=1e-6)


def test_zero_rows_are_uniform_and_no_samples_is_allowed():
    stats = NormalisationStats.fit(np.zeros((2, 3)), np.array([[0.0, 0.0], [2.0, 1.0]]))
    x = stats.transform(np.zeros((2, 3)), np.array([[0.0, 0.0], [2.0, 1.0]]))
    assert x[0, :2].tolist() == [0.5, 0.5]
    none = NormalisationStats.fit(np.ones((3, 2)), np.zeros((3, 0)))
    out = none.transform(np.ones((3, 2)), np.zeros((3, 0)))
    assert out.shape == (3, 3) and np.isfinite(out).all()


def test_stats_round_trip():
    stats = NormalisationStats.fit(np.random.default_rng(0).random((5, 4)), np.ones((5, 2)))
    assert NormalisationStats.from_dict(stats.to_dict()) == stats
