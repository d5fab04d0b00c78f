"""The training loop's stopping rule: a held-out plateau starts a final anneal, then stops."""

from __future__ import annotations

import torch

from tdstore.student.fit import FitConfig, Validation, fit_student


def _noise_problem(n: int = 256, n_leaves: int = 4, seed: int = 0):
    # Labels independent of the inputs: the held-out loss cannot keep improving.
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    lo = torch.randint(0, n_leaves, (n,), generator=generator)
    depth = torch.full((n,), 7)
    return x, lo, lo + 1, depth


def _fit(config: FitConfig):
    x, lo, hi, depth = _noise_problem()
    val_x, val_lo, val_hi, _ = _noise_problem(seed=1)
    return fit_student(x, lo, hi, depth, 4, config, validation=Validation(val_x, val_lo, val_hi))


def test_plateau_anneals_the_learning_rate_to_eta_min_then_stops():
    config = FitConfig(
        epochs=60, batch_size=64, lr=1e-2, hidden=16, patience=3, schedule="constant"
    )
    result = _fit(config)
    assert result.annealed_after is not None and result.stopped_early
    # Exactly `patience` more epochs after the plateau, with a falling learning rate.
    assert len(result.history) == result.annealed_after + config.patience
    lrs = [h["lr"] for h in result.history]
    assert all(lr == config.lr for lr in lrs[: result.annealed_after])
    tail = lrs[result.annealed_after - 1 :]
    assert all(b < a for a, b in zip(tail, tail[1:], strict=False))
    assert lrs[-1] == config.eta_min
    # The returned weights are the best held-out epoch's (improvements under min_delta
    # do not count).
    best = min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] <= best + config.min_delta


def test_no_patience_runs_every_epoch_of_the_schedule():
    config = FitConfig(epochs=5, batch_size=64, lr=1e-2, hidden=16, patience=None)
    result = _fit(config)
    assert result.annealed_after is None and not result.stopped_early
    assert len(result.history) == 5
