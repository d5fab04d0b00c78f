"""Soft labels as the posterior of the true leaf given the teacher and the noisy label."""

from __future__ import annotations

import numpy as np
import pytest

from tdstore.teacher.posterior import fit_label_noise, label_mass, label_posterior


def test_label_mass_sums_the_label_range():
    q = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    lo, hi = np.array([1, 0]), np.array([3, 4])
    np.testing.assert_allclose(label_mass(q, lo, hi), [0.5, 1.0])


def test_posterior_by_hand():
    q = np.array([[0.5, 0.3, 0.2]] * 4)
    # a species label (leaf 1), a genus label (leaves 0-1), the root, a rejected leaf
    lo, hi = np.array([1, 0, 0, 2]), np.array([2, 2, 3, 3])
    q[3] = [0.6, 0.4, 0.0]
    noise = 0.1
    post, pi = label_posterior(q, lo, hi, noise)
    pi_species = 0.9 * 0.3 / (0.9 * 0.3 + 0.1 / 3)
    pi_genus = 0.9 * 0.8 / (0.9 * 0.8 + 0.1 * 2 / 3)
    np.testing.assert_allclose(pi, [pi_species, pi_genus, 1.0, 0.0])
    np.testing.assert_allclose(post[0], pi_species * np.array([0, 1, 0]) + (1 - pi_species) * q[0])
    expected_genus = pi_genus * np.array([0.5 / 0.8, 0.3 / 0.8, 0]) + (1 - pi_genus) * q[1]
    np.testing.assert_allclose(post[1], expected_genus)
    np.testing.assert_allclose(post[2], q[2])  # root label: the teacher alone
    np.testing.assert_allclose(post[3], q[3])  # the teacher gives the label no mass
    np.testing.assert_allclose(post.sum(axis=1), 1.0)


def test_noise_rate_recovered_by_maximum_likelihood():
    rng = np.random.default_rng(0)
    n, leaves, noise = 20000, 50, 0.2
    logits = rng.normal(size=(n, leaves)) * 3
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = (q.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    labels = np.where(rng.random(n) < noise, rng.integers(0, leaves, n), truth)
    mass = label_mass(q, labels, labels + 1)
    fitted = fit_label_noise(mass, np.full(n, 1 / leaves))
    # the random label hits the true leaf 1/50 of the time, so the identified rate is 0.196
    assert fitted == pytest.approx(noise * (1 - 1 / leaves), abs=0.02)


def test_noise_rate_at_the_bounds():
    assert fit_label_noise(np.ones(100), np.full(100, 0.01)) < 1e-3  # labels always agree
    assert fit_label_noise(np.zeros(100), np.full(100, 0.01)) > 0.999  # never
    assert fit_label_noise(np.zeros(0), np.zeros(0)) < 1e-3
