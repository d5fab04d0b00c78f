"""A killed training loop resumes from its saved state and ends exactly where an unbroken one does."""

from __future__ import annotations

import pytest
import torch

import tdstore
from tdstore.check import leftovers, remove_leftovers
from tdstore.student.checkpoint import TrainingState, resume_dir, training_key
from tdstore.student.fit import FitConfig, Validation, fit_student
from tdstore.student.kd import SparseTeacher

N_LEAVES = 6


class Killed(Exception):
    """Stands in for SIGKILL: raised after an epoch's state is saved, before the next."""


def _problem(n: int = 320, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    # Learnable labels (a leaf per region of the first input), some of them inner nodes.
    lo = torch.clamp(((x[:, 0] + 2) * 1.5).long(), 0, N_LEAVES - 1)
    hi = lo + 1
    inner = torch.rand(n, generator=generator) < 0.2
    lo, hi = torch.where(inner, 0, lo), torch.where(inner, 3, hi)
    depth = torch.where(inner, 6, 7)
    return x, lo, hi, depth


def _teacher(n: int) -> SparseTeacher:
    generator = torch.Generator().manual_seed(5)
    prob = torch.softmax(torch.randn(n, 2, generator=generator), dim=1) * 0.9
    index = torch.randint(0, N_LEAVES, (n, 2), generator=generator)
    return SparseTeacher(index, prob, torch.full((n,), 0.1), torch.ones(n, dtype=torch.bool))


def _fit(config: FitConfig, *, saved=None, kill_after: int | None = None, teacher=False):
    x, lo, hi, depth = _problem()
    vx, vlo, vhi, _ = _problem(96, seed=1)
    seen = []

    def on_epoch(record):
        seen.append(record["epoch"])
        if kill_after is not None and record["epoch"] == kill_after:
            raise Killed

    torch.set_num_threads(1)
    return fit_student(
        x,
        lo,
        hi,
        depth,
        N_LEAVES,
        config,
        validation=Validation(vx, vlo, vhi),
        teacher=_teacher(x.shape[0]) if teacher else None,
        on_epoch=on_epoch,
        saved=saved,
    ), seen


def _same(a, b) -> None:
    for (name, left), right in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(left, right), name
    drop = ("seconds", "samples_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in a.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in b.history
    ]
    assert (a.best_epoch, a.annealed_after, a.stopped_early) == (
        b.best_epoch,
        b.annealed_after,
        b.stopped_early,
    )


@pytest.fixture
def store(tmp_path):
    return tdstore.init(tmp_path / "s.tdstore")


@pytest.mark.parametrize(
    ("schedule", "patience", "kill_after", "teacher"),
    [
        ("onecycle", None, 3, False),  # mid one-cycle
        # Held-out gains under min_delta do not count: the plateau is reached at epoch 3,
        # and the kill lands inside the final anneal (epochs 4 and 5).
        ("constant", 2, 4, False),
        ("cosine", None, 4, True),  # distilled, per-epoch schedule
    ],
)
def test_resumed_fit_equals_an_unbroken_one(store, schedule, patience, kill_after, teacher):
    config = FitConfig(
        epochs=12,
        batch_size=32,
        lr=1e-2,
        hidden=16,
        schedule=schedule,
        patience=patience,
        min_delta=1.0 if patience else 1e-3,
    )
    unbroken, _ = _fit(config, teacher=teacher)
    if patience is not None:
        assert unbroken.annealed_after == 3 and unbroken.stopped_early

    saved = TrainingState.open(store, "r", key="k", every_s=0)
    with pytest.raises(Killed):
        _fit(config, saved=saved, kill_after=kill_after, teacher=teacher)
    again = TrainingState.open(store, "r", key="k", every_s=0)
    resumed, seen = _fit(config, saved=again, teacher=teacher)
    assert seen[0] == kill_after + 1  # no finished epoch is redone
    assert again.resumed == [{"phase": "fit", "epoch": kill_after}]
    _same(resumed, unbroken)


def test_state_of_other_settings_or_damaged_is_discarded(store):
    config = FitConfig(epochs=4, batch_size=32, hidden=16, patience=None)
    saved = TrainingState.open(store, "r", key="a", every_s=0)
    with pytest.raises(Killed):
        _fit(config, saved=saved, kill_after=2)
    assert (resume_dir(store, "r") / "fit.safetensors").exists()

    other = TrainingState.open(store, "r", key="b", every_s=0)
    assert other.discarded and not resume_dir(store, "r").exists()
    assert other.load("fit") is None

    with pytest.raises(Killed):
        _fit(config, saved=other, kill_after=2)
    (resume_dir(store, "r") / "fit.safetensors").write_bytes(b"not a safetensors file")
    damaged = TrainingState.open(store, "r", key="b", every_s=0)
    assert damaged.load("fit") is None and damaged.discarded
    result, seen = _fit(config, saved=damaged)
    assert seen == [1, 2, 3, 4]
    _same(result, _fit(config)[0])


def test_saving_waits_for_the_interval(store):
    config = FitConfig(epochs=3, batch_size=32, hidden=16, patience=None)
    saved = TrainingState.open(store, "r", key="k", every_s=3600)
    with pytest.raises(Killed):
        _fit(config, saved=saved, kill_after=2)
    assert not resume_dir(store, "r").exists()


def test_training_key_follows_config_and_every_array():
    import numpy as np

    a, b = np.arange(6, dtype=np.float32), np.arange(6, dtype=np.float32)
    key = training_key({"seed": 0}, [a, None])
    assert key == training_key({"seed": 0}, [b, None])
    assert key != training_key({"seed": 1}, [a, None])
    b[3] = -1
    assert key != training_key({"seed": 0}, [b, None])
    assert key != training_key({"seed": 0}, [a.reshape(2, 3), None])


def test_check_lists_saved_state_and_clean_removes_it(store):
    saved = TrainingState.open(store, "r", key="k", every_s=0)
    with pytest.raises(Killed):
        _fit(
            FitConfig(epochs=3, batch_size=32, hidden=16, patience=None), saved=saved, kill_after=1
        )
    assert leftovers(store) == [resume_dir(store, "r")]
    assert remove_leftovers(store) == [resume_dir(store, "r")]
    assert leftovers(store) == []


def test_progress_of_a_resumed_step_counts_from_where_it_was(capsys, monkeypatch):
    from tdstore.progress import Progress

    monkeypatch.delenv("TDSTORE_QUIET", raising=False)
    with Progress(
        "train r (resumed after epoch 2)", total=5, unit="epochs", initial=2, interval=0
    ) as bar:
        bar.advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train r (resumed after epoch 2): 3/5 epochs (60.0%)")
    assert len(lines) == 2  # one per advance, one at the end: none for the 2 epochs done before
