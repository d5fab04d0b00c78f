"""The student network's pieces: the uniform-mask dropout behaves as nn.Dropout."""

from __future__ import annotations

import pytest
import torch

from tdstore.student.network import StudentNet, UniformDropout


def test_uniform_dropout_keeps_1_minus_p_and_scales_survivors():
    torch.manual_seed(0)
    layer = UniformDropout(0.2)
    x = torch.ones(200, 500, requires_grad=True)
    y = layer(x)
    kept = y != 0
    # 100k units: the kept share is 0.8 within 4 standard deviations (0.0013 each).
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1.25))
    y.sum().backward()
    # The gradient flows through the same mask and scale.
    assert torch.equal(x.grad, y.detach())


def test_uniform_dropout_is_the_identity_in_eval_mode_and_checks_p():
    layer = UniformDropout(0.2).eval()
    x = torch.randn(8, 4)
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        UniformDropout(1.0)


def test_student_uses_it_between_linear_and_batchnorm():
    net = StudentNet(10, 5, hidden=16, n_layers=2, dropout=0.2)
    kinds = [type(m).__name__ for m in net.body]
    assert kinds == ["Linear", "LeakyReLU", "UniformDropout", "BatchNorm1d"] * 2
