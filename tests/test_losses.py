from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tdstore.losses import flat_softmax_nll
from tdstore.taxonomy import Hierarchy, Taxonomy


def _tree():
    tax = Taxonomy.empty()
    a1a = tax.add_lineage(("d__A", "p__A1", "c__A1a"), where="t")
    a1b = tax.add_lineage(("d__A", "p__A1", "c__A1b"), where="t")
    a2 = tax.add_lineage(("d__A", "p__A2"), where="t")
    b = tax.add_lineage(("d__B",), where="t")
    return tax, Hierarchy.from_labels(tax, [a1a, a1b, a2, b])


def test_flat_softmax_hand_computed():
    tax, h = _tree()
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]] * 4)
    probs = torch.softmax(logits[0], 0).tolist()
    labels = np.array([tax.id_of("p__A1"), tax.id_of("c__A1b"), 0, tax.id_of("d__A")])
    lo, hi = h.label_ranges(labels)
    nll = flat_softmax_nll(logits, torch.as_tensor(lo), torch.as_tensor(hi), reduction="none")
    expected = [-math.log(probs[0] + probs[1]), -math.log(probs[1]), 0.0, -math.log(sum(probs[:3]))]
    assert nll.tolist() == pytest.approx(expected, abs=1e-6)


def test_flat_softmax_gradient_is_finite_for_tiny_mass():
    _, h = _tree()
    logits = torch.tensor([[50.0, -50.0, -50.0, -50.0]], requires_grad=True)
    lo, hi = torch.tensor([3]), torch.tensor([4])
    loss = flat_softmax_nll(logits, lo, hi)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(100.0, rel=1e-4)
