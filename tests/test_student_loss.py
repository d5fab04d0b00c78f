"""The distillation terms and combined losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tdstore.student.kd import (
    SparseTeacher,
    joint_loss,
    logit_kl,
    soft_label_loss,
    sparse_kl,
)
from tdstore.taxonomy import Hierarchy, Taxonomy


def _tree():
    # Leaves in DFS order: c__A1a, c__A1b, p__A2, d__B.
    tax = Taxonomy.empty()
    ids = [
        tax.add_lineage(("d__A", "p__A1", "c__A1a"), where="t"),
        tax.add_lineage(("d__A", "p__A1", "c__A1b"), where="t"),
        tax.add_lineage(("d__A", "p__A2"), where="t"),
        tax.add_lineage(("d__B",), where="t"),
    ]
    return tax, Hierarchy.from_labels(tax, ids)


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _kl(q, p):
    return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True) if a > 0)


def _temper(q, t):
    powered = [v ** (1 / t) for v in q]
    return [v / sum(powered) for v in powered]


LOGITS = [1.0, 2.0, 0.5, -1.0]
# Teacher row: top-2 leaves 1 (0.6) and 0 (0.3), rest 0.1 over the two unlisted leaves.
DENSE_TEACHER = [0.3, 0.6, 0.05, 0.05]


def _teacher(n=1, present=True):
    return SparseTeacher(
        index=torch.tensor([[1, 0]] * n),
        prob=torch.tensor([[0.6, 0.3]] * n),
        rest=torch.tensor([0.1] * n),
        present=torch.tensor([present] * n),
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_sparse_kl_matches_dense_hand_computation(temperature):
    teacher = _teacher()
    kl = sparse_kl(
        torch.tensor([LOGITS]), teacher.index, teacher.prob, teacher.rest, temperature=temperature
    )
    q = _temper(DENSE_TEACHER, temperature)
    p = _softmax([v / temperature for v in LOGITS])
    assert kl.item() == pytest.approx(_kl(q, p), abs=1e-6)


def test_sparse_kl_zero_rest_and_padding():
    # One listed leaf holding all the mass, one padded slot (prob 0): KL = -log p_student(leaf 2).
    kl = sparse_kl(
        torch.tensor([LOGITS]),
        torch.tensor([[2, 0]]),
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([0.0]),
        temperature=1.0,
    )
    assert kl.item() == pytest.approx(-math.log(_softmax(LOGITS)[2]), abs=1e-6)


def test_logit_kl_matches_hand_computation():
    teacher_logits = [0.0, 1.0, -1.0, 3.0]
    kl = logit_kl(torch.tensor([LOGITS]), torch.tensor([teacher_logits]), temperature=2.0)
    q = _softmax([v / 2 for v in teacher_logits])
    p = _softmax([v / 2 for v in LOGITS])
    assert kl.item() == pytest.approx(_kl(q, p), abs=1e-6)


def _labels(tax, h):
    # An inner-node label (p__A1), a leaf label (c__A1b) and the root (unclassified).
    labels = np.array([tax.id_of("p__A1"), tax.id_of("c__A1b"), 0])
    lo, hi = h.label_ranges(labels)
    return torch.as_tensor(lo), torch.as_tensor(hi)


def _hard(probs):
    return [-math.log(probs[0] + probs[1]), -math.log(probs[1]), 0.0]


def test_alpha_one_is_the_hard_loss():
    tax, h = _tree()
    lo, hi = _labels(tax, h)
    logits = torch.tensor([LOGITS] * 3)
    loss = soft_label_loss(logits, lo, hi, _teacher(3), alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(sum(_hard(_softmax(LOGITS))) / 3, abs=1e-6)


def test_combined_soft_label_loss_hand_computed():
    tax, h = _tree()
    lo, hi = _labels(tax, h)
    logits = torch.tensor([LOGITS] * 3)
    loss = soft_label_loss(logits, lo, hi, _teacher(3), alpha=0.3, temperature=2.0)
    hard = sum(_hard(_softmax(LOGITS))) / 3
    kl = _kl(_temper(DENSE_TEACHER, 2.0), _softmax([v / 2 for v in LOGITS]))
    assert loss.item() == pytest.approx(0.3 * hard + 0.7 * 4.0 * kl, abs=1e-6)


def test_rows_without_teacher_add_no_kl():
    tax, h = _tree()
    lo, hi = _labels(tax, h)
    teacher = _teacher(3)
    teacher.present = torch.tensor([True, False, False])
    # A garbage teacher on the rows marked absent must not matter.
    teacher.prob[1:] = torch.tensor([1.0, 0.0])
    logits = torch.tensor([LOGITS] * 3)
    loss = soft_label_loss(logits, lo, hi, teacher, alpha=0.5, temperature=2.0)
    kl = _kl(_temper(DENSE_TEACHER, 2.0), _softmax([v / 2 for v in LOGITS]))
    hard = _hard(_softmax(LOGITS))
    # Row 0 mixes the two terms; rows 1 and 2 keep their whole hard loss (weight 1, not alpha).
    expected = (0.5 * hard[0] + 0.5 * 4.0 * kl + hard[1] + hard[2]) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_joint_loss_hand_computed_and_teacher_detached_in_kl():
    tax, h = _tree()
    lo, hi = _labels(tax, h)
    head_values = [0.0, 1.0, -1.0, 3.0]
    student = torch.tensor([LOGITS] * 3, requires_grad=True)
    head = torch.tensor([head_values] * 3, requires_grad=True)
    loss = joint_loss(student, head, lo, hi, alpha=0.5, temperature=2.0)
    kl = _kl(_softmax([v / 2 for v in head_values]), _softmax([v / 2 for v in LOGITS]))
    expected = (
        0.5 * sum(_hard(_softmax(LOGITS))) / 3
        + 0.5 * 4.0 * kl
        + sum(_hard(_softmax(head_values))) / 3
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    # The head's gradient comes from its own hard loss only.
    head_only = head.detach().clone().requires_grad_(True)
    from tdstore.losses import flat_softmax_nll

    flat_softmax_nll(head_only, lo, hi).backward()
    assert torch.allclose(head.grad, head_only.grad, atol=1e-7)


def test_fast_flat_softmax_equals_the_reference_loss():
    from tdstore.losses import flat_softmax_nll_exact as reference
    from tdstore.student.kd import flat_softmax_nll as fast

    tax, h = _tree()
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 4, generator=generator) * 5).requires_grad_(True)
    labels = np.array([tax.id_of("p__A1"), tax.id_of("c__A1b"), 0, tax.id_of("d__B")] * 16)
    lo, hi = (torch.as_tensor(a) for a in h.label_ranges(labels))
    ours = fast(logits, lo, hi, reduction="none")
    theirs = reference(logits, lo, hi, reduction="none")
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert (ours[2::4] == 0).all()  # root labels cost exactly nothing
    grad_ours = torch.autograd.grad(ours.sum(), logits)[0]
    grad_theirs = torch.autograd.grad(reference(logits, lo, hi).sum() * 64, logits)[0]
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-5)


def test_short_one_cycle_runs_fall_back_to_a_constant_rate():
    from tdstore.student.fit import FitConfig, _scheduler

    for epochs, steps in ((1, 1), (2, 2), (4, 1), (3, 3)):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, when = _scheduler(optimizer, FitConfig(epochs=epochs), steps)
        for _ in range(epochs * steps):
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        assert (scheduler is None) == (epochs * steps < 8)


def test_kd_rows_species_keeps_only_the_hard_loss_where_the_label_stops_above_species():
    from tdstore.student.fit import distilled_rows

    tax, h = _tree()
    lo, hi = _labels(tax, h)
    logits = torch.tensor([LOGITS] * 3)
    # Row 0's label names a species (depth 7); rows 1 and 2 stop at genus and at family.
    depth = torch.tensor([7, 6, 5])
    masked = distilled_rows(_teacher(3), depth, "species")
    assert masked.present.tolist() == [True, False, False]
    loss = soft_label_loss(logits, lo, hi, masked, alpha=0.5, temperature=2.0)
    kl = _kl(_temper(DENSE_TEACHER, 2.0), _softmax([v / 2 for v in LOGITS]))
    hard = _hard(_softmax(LOGITS))
    assert loss.item() == pytest.approx(
        (0.5 * hard[0] + 2.0 * kl + hard[1] + hard[2]) / 3, abs=1e-6
    )
    # "all" is the paper's choice: every row with a teacher is distilled.
    assert distilled_rows(_teacher(3), depth, "all").present.tolist() == [True, True, True]
    # A row without a teacher stays without one.
    assert (
        distilled_rows(_teacher(3, present=False), depth, "species").present.tolist() == [False] * 3
    )
    with pytest.raises(ValueError, match="kd_rows"):
        distilled_rows(_teacher(3), depth, "genus")
