"""tdstore drop: each kind of object removed whole, nothing removed on a bad name or a held
lock, dependents reported, and the store still checks clean afterwards."""

from __future__ import annotations

import shutil

import pytest
from _simstore import simulated_store

import tdstore
from tdstore.check import check_store, leftovers
from tdstore.drop import drop
from tdstore.errors import ConflictError, IncompleteError, UsageError
from tdstore.student.fit import FitConfig
from tdstore.student.runs import list_names as run_names
from tdstore.student.train import TrainRequest, train

TINY = FitConfig(epochs=2, batch_size=128, lr=1e-2, hidden=32, patience=None)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store holding one object of every kind: labels, embeddings, soft labels, two runs
    (one distilled from the soft labels, one on a subset), a subset, label metrics."""
    import torch

    from tdstore import subsets
    from tdstore.evaluate import evaluate
    from tdstore.labels import import_labels
    from tdstore.teacher.embed_run import embed
    from tdstore.teacher.teach import teach

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("drop")
    store, sim = simulated_store(root, seed=2)
    import_labels(store, "mmseqs", sim["labels_path"], format="taxometer")
    import_labels(store, "gold", sim["gold_path"], format="taxometer")
    embed(store, "kmer:4", name="k3", show_progress=False)
    teach(store, embeddings="k3", labels="mmseqs", name="soft", folds=2, epochs=2, progress=False)
    subsets.create(store, "long", where="length >= 3000")
    train(
        store,
        TrainRequest(labels="mmseqs", name="kd", soft_labels="soft", fit=TINY),
        progress=False,
    )
    train(store, TrainRequest(labels="mmseqs", name="sub", subset="long", fit=TINY), progress=False)
    evaluate(store, gold="gold", label_sets=["mmseqs"])
    return store.path


@pytest.fixture
def store(template, tmp_path, monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    shutil.copytree(template, tmp_path / "s.tdstore")
    return tdstore.open(tmp_path / "s.tdstore")


def test_drop_runs_removes_the_run_and_its_saved_training_state(store):
    resume = store.path / "runs" / ".resume" / "kd"
    resume.mkdir(parents=True)
    (resume / "state.safetensors").write_bytes(b"x" * 100)
    (dropped,) = drop(store, "runs", ["kd"])
    assert dropped.name == "kd" and dropped.freed_bytes > 100 and dropped.notes == []
    assert not (store.path / "runs" / "kd").exists() and not resume.exists()
    assert run_names(store) == ["sub"]
    assert store.sql("SELECT DISTINCT run FROM predictions").column(0).to_pylist() == ["sub"]
    assert check_store(store, deep=True) == [] and leftovers(store) == []


def test_one_unknown_name_removes_nothing(store):
    with pytest.raises(IncompleteError, match=r"no run 'nope' \(known: kd, sub\)"):
        drop(store, "runs", ["kd", "nope"])
    assert run_names(store) == ["kd", "sub"]
    with pytest.raises(UsageError, match="unknown kind 'run'"):
        drop(store, "run", ["kd"])
    with pytest.raises(UsageError, match="named twice"):
        drop(store, "runs", ["kd", "kd"])
    with pytest.raises(UsageError, match="invalid run name"):
        drop(store, "runs", ["../labels"])
    assert run_names(store) == ["kd", "sub"]


def test_drop_soft_labels_reports_the_runs_distilled_from_them(store):
    from tdstore.student.runs import load_predictions
    from tdstore.teacher.soft_labels import head_path, table_path

    (dropped,) = drop(store, "soft-labels", ["soft"])
    assert not table_path(store, "soft").exists() and not head_path(store, "soft").exists()
    assert dropped.notes == [
        "runs trained with it keep their predictions and metrics but cannot be retrained "
        "as they were: kd"
    ]
    assert load_predictions(store, "kd")[0].num_rows == store.n_contigs
    assert check_store(store, deep=True) == []


def test_drop_labels_takes_their_metrics_and_keeps_the_taxonomy(store):
    taxonomy = store.taxonomy().names
    metrics = store.path / "metrics" / "labels-mmseqs.parquet"
    assert metrics.exists()
    (dropped,) = drop(store, "labels", ["mmseqs"])
    assert not store.label_path("mmseqs").exists() and not metrics.exists()
    assert store.label_sets() == ["gold"]
    assert store.taxonomy().names == taxonomy  # ids stay stable
    assert dropped.notes == [
        "soft label sets made from it keep their soft labels: soft",
        "runs trained with it keep their predictions and metrics but cannot be retrained "
        "as they were: kd, sub",
    ]
    assert check_store(store, deep=True) == []


def test_drop_embeddings_and_subsets(store):
    (emb,) = drop(store, "embeddings", ["k3"])
    assert not (store.path / "embeddings" / "k3.zarr").exists()
    assert emb.notes == ["soft label sets made from it keep their soft labels: soft"]
    (sub,) = drop(store, "subsets", ["long"])
    assert sub.notes[0].endswith("cannot be retrained as they were: sub")
    assert not (store.path / "subsets" / "long.parquet").exists()
    assert check_store(store, deep=True) == []


@pytest.mark.parametrize(
    ("kind", "name", "key"),
    [
        ("runs", "kd", "run-kd"),
        ("soft-labels", "soft", "soft_labels-soft"),
        ("embeddings", "k3", "embed-shard-k3@0"),
        ("subsets", "long", "subset-long"),
    ],
)
def test_an_object_being_written_is_not_dropped(store, kind, name, key):
    before = sorted(
        p.relative_to(store.path) for p in store.path.rglob("*") if ".locks" not in p.parts
    )
    with (
        store.lock(key),
        pytest.raises(ConflictError, match=f"is being written by another process \\({key}\\)"),
    ):
        drop(store, kind, [name])
    after = sorted(
        p.relative_to(store.path) for p in store.path.rglob("*") if ".locks" not in p.parts
    )
    assert after == before


def test_cli_drop(cli, store):
    result = cli("drop", store.path, "runs", "kd", "sub")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dropped run 'kd' (") and lines[0].endswith(" MiB freed)")
    assert lines[1].startswith("dropped run 'sub' (")
    result = cli("drop", store.path, "soft-labels", "soft")
    assert "  note: runs trained with it" not in result.stdout  # both runs are gone
    missing = cli("drop", store.path, "runs", "kd")
    assert missing.exit_code == 4
    assert missing.stderr.strip() == f"error: {store.path}: no run 'kd' (known: none)"
    assert cli("drop", store.path, "tables", "x").exit_code == 2


def test_a_held_lock_on_any_name_stops_the_whole_drop(store):
    """The second name is being written: the first is not dropped either."""
    with store.lock("run-sub"), pytest.raises(ConflictError, match=r"run 'sub' is being written"):
        drop(store, "runs", ["kd", "sub"])
    assert run_names(store) == ["kd", "sub"]


@pytest.mark.parametrize(
    ("kind", "name", "key"),
    [("runs", "kd", "metrics-run-kd"), ("labels", "mmseqs", "metrics-labels-mmseqs")],
)
def test_an_object_being_evaluated_is_not_dropped(store, kind, name, key):
    with store.lock(key), pytest.raises(ConflictError, match=f"\\({key}\\)"):
        drop(store, kind, [name])
    assert name in (run_names(store) if kind == "runs" else store.label_sets())


def test_metrics_of_an_object_dropped_during_its_evaluation_are_not_saved(store):
    """evaluate loads, drop removes the run, evaluate saves: no orphan runs/kd/metrics.parquet."""
    from tdstore.evaluate import evaluate, save_metrics

    table = evaluate(store, gold="gold", runs=["kd"], save=False)
    drop(store, "runs", ["kd"])
    source = type("S", (), {"kind": "run", "key": "kd"})()
    with pytest.raises(IncompleteError, match="run 'kd' was dropped while it was evaluated"):
        save_metrics(store, source, table)
    assert not (store.path / "runs" / "kd").exists()


def test_dropping_a_gold_standard_names_the_metrics_computed_against_it(store):
    (dropped,) = drop(store, "labels", ["gold"])
    assert dropped.notes == ["metrics computed against it as the gold standard stay: labels:mmseqs"]
    assert (store.path / "metrics" / "labels-mmseqs.parquet").exists()
