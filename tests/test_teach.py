"""tdstore teach, unit level: head training, cross-fitting, soft label summaries, head files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdstore.errors import SchemaError, UsageError
from tdstore.taxonomy import Hierarchy, Taxonomy
from tdstore.teacher.heads import TeacherHead, load_head, read_head_metadata, save_head
from tdstore.teacher.soft_labels import dense_probabilities, summarise, to_table
from tdstore.teacher.teach import (
    TeachConfig,
    assign_folds,
    fit_soft_labels,
    heldout_metrics,
    leaf_probabilities,
    train_head,
)

N_GENERA, N_SPECIES = 3, 3


def _taxonomy() -> tuple[Taxonomy, np.ndarray]:
    """3 genera x 3 species under one family; returns the tree and the species ids."""
    tax = Taxonomy.empty()
    top = ("d__B", "p__P", "c__C", "o__O", "f__F")
    species = [
        tax.add_lineage((*top, f"g__G{g}", f"s__G{g} sp{s}"), where="t")
        for g in range(N_GENERA)
        for s in range(N_SPECIES)
    ]
    return tax, np.asarray(species)


def _data(n: int = 450, hidden: int = 16, seed: int = 0, noise: float = 0.2):
    """Gaussian clusters per species; ``noise`` of the labels replaced by random species."""
    rng = np.random.default_rng(seed)
    tax, species = _taxonomy()
    centres = rng.normal(size=(len(species), hidden)) * 3
    truth = rng.integers(0, len(species), n)
    x = (centres[truth] + rng.normal(size=(n, hidden))).astype(np.float32)
    labels = species[truth].copy()
    flip = rng.random(n) < noise
    labels[flip] = species[rng.integers(0, len(species), int(flip.sum()))]
    return tax, x, species[truth], labels


def _fit(x, labels, tax, rows=None, **config):
    rows = np.arange(len(labels)) if rows is None else rows
    cfg = TeachConfig(**{"epochs": 60, **config})
    return fit_soft_labels(lambda r: x[r], len(x), rows, labels, tax, cfg, progress=False)


def test_train_head_reduces_loss():
    tax, x, _, labels = _data()
    hierarchy = Hierarchy.from_labels(tax, labels)
    lo, hi = hierarchy.label_ranges(labels)
    untrained = TeacherHead("linear", x.shape[1], hierarchy.leaf_ids, x.mean(0), x.std(0))
    before, _ = heldout_metrics(untrained, x, lo, hi)
    for kind in ("linear", "mlp"):
        fit = train_head(x, lo, hi, hierarchy.leaf_ids, TeachConfig(head=kind, epochs=25), seed=1)
        after, accuracy = heldout_metrics(fit.head, x, lo, hi)
        assert after < 0.6 * before, kind
        assert accuracy > 0.75, kind
        assert fit.val_loss is not None and 1 <= fit.best_epoch <= fit.epochs_run <= 40


def test_range_nll_equals_the_shared_flat_softmax_loss():
    from tdstore.losses import flat_softmax_nll_exact
    from tdstore.teacher.teach import range_nll

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 9, generator=generator) * 4
    lo = torch.randint(0, 9, (64,), generator=generator)
    hi = torch.minimum(lo + torch.randint(1, 5, (64,), generator=generator), torch.tensor(9))
    lo[:5], hi[:5] = 0, 9  # unclassified: zero loss
    expected = flat_softmax_nll_exact(logits, lo, hi, reduction="none")
    torch.testing.assert_close(range_nll(logits, lo, hi), expected, atol=1e-5, rtol=1e-5)
    assert range_nll(logits, lo, hi)[:5].abs().max() < 1e-6


def test_folds_are_stratified_balanced_and_seeded():
    taxa = np.repeat([5, 6, 7], [10, 7, 1])
    fold = assign_folds(taxa, 3, seed=0)
    assert np.bincount(fold).tolist() in ([6, 6, 6],)
    for taxon in (5, 6):
        assert set(fold[taxa == taxon]) == {0, 1, 2}  # each taxon in every training set
    assert np.array_equal(fold, assign_folds(taxa, 3, seed=0))
    assert not np.array_equal(fold, assign_folds(taxa, 3, seed=1))


def test_each_fold_predicted_by_a_head_that_never_saw_it():
    tax, x, _, labels = _data(n=300)
    fit = _fit(x, labels, tax, folds=3)
    assert set(fit.fold.tolist()) == {0, 1, 2}
    expected = assign_folds(labels, 3, seed=0)
    assert np.array_equal(fit.fold, expected)
    assert [m["n_heldout"] for m in fit.fold_metrics] == np.bincount(expected).tolist()
    assert all(m["n_train"] + m["n_heldout"] == 300 for m in fit.fold_metrics)


def test_cross_fitting_does_not_reproduce_an_unlearnable_label():
    """One contig carries the only label of its species, on an outlier embedding.

    Trained on everything (folds=1, no early stopping) the head memorises it; with
    cross-fitting the head that scores this contig never saw that species.
    """
    tax, x, _, labels = _data(n=300, noise=0.0)
    lone = tax.add_lineage(("d__B", "p__P", "c__C", "o__O", "f__F", "g__G0", "s__lone"), where="t")
    x = x.copy()
    x[7] = 12.0  # far from every cluster, so only its own label explains it
    labels = labels.copy()
    labels[7] = lone
    # The teacher's own predictions (the label posterior would add the label back in).
    only = {"val_fraction": 0.0, "epochs": 150, "label_posterior": False}
    memorised = _fit(x, labels, tax, folds=1, **only)
    assert memorised.summary["leaf_ids"][7, 0] == lone
    crossed = _fit(x, labels, tax, folds=3, **only)
    leaf_ids, probs = crossed.summary["leaf_ids"][7], crossed.summary["leaf_probs"][7]
    assert leaf_ids[0] != lone
    assert probs[leaf_ids == lone].sum() < 0.05
    assert crossed.summary["taxon_id"][7] != lone


def test_soft_labels_beat_noisy_labels_on_clusters():
    tax, x, truth, labels = _data(n=450, noise=0.3)
    fit = _fit(x, labels, tax, folds=3)
    top = fit.summary["leaf_ids"][:, 0]
    assert (top == truth).mean() > (labels == truth).mean() + 0.15
    assert fit.label_noise is None and fit.label_weight is None


def test_label_posterior_completes_truncated_labels_and_keeps_the_rest():
    """Genus-only labels get the teacher's species; species labels the teacher allows stay."""
    tax, x, truth, labels = _data(n=450, noise=0.0)
    labels = labels.copy()
    truncated = np.arange(0, 450, 3)
    labels[truncated] = [tax.parents[int(t)] for t in labels[truncated]]  # species -> genus
    labels[5] = truth[6] if truth[6] != truth[5] else truth[7]  # one wrong species label
    fit = _fit(x, labels, tax, folds=3, label_posterior=True)
    top = fit.summary["leaf_ids"][:, 0]
    assert (top[truncated] == truth[truncated]).mean() > 0.95
    kept = np.setdiff1d(np.arange(450), truncated)
    assert (top[kept] == labels[kept]).mean() > 0.99
    assert fit.label_noise is not None and 0.0 < fit.label_noise < 0.05
    weight = fit.label_weight
    assert weight is not None and np.isfinite(weight).all() and weight.min() >= 0.0
    # no label is forced on the contigs: a truncated label leaves the species to the teacher
    only = _fit(x, labels, tax, folds=3)
    assert (only.summary["leaf_ids"][truncated, 0] == top[truncated]).mean() > 0.9


def test_unlabelled_rows_come_from_the_final_head():
    tax, x, _, labels = _data(n=300)
    labelled = np.arange(0, 300, 2)
    unclassified = np.zeros(10, np.int64)  # root labels count as no label
    rows = np.concatenate([labelled, np.arange(1, 21, 2)])
    fit = _fit(x, np.concatenate([labels[labelled], unclassified]), tax, rows=rows, folds=3)
    unlabelled = np.setdiff1d(np.arange(300), labelled)
    assert (fit.fold[unlabelled] == -1).all() and (fit.fold[labelled] >= 0).all()
    probs = leaf_probabilities(fit.final.head, x[unlabelled])
    expected = fit.hierarchy.leaf_ids[probs.argmax(axis=1)]
    assert np.array_equal(fit.summary["leaf_ids"][unlabelled, 0], expected)
    assert fit.n_labelled == labelled.size


def test_deterministic_for_a_seed():
    tax, x, _, labels = _data(n=200)
    a = _fit(x, labels, tax, folds=2, head="mlp", epochs=15)
    b = _fit(x, labels, tax, folds=2, head="mlp", epochs=15)
    c = _fit(x, labels, tax, folds=2, head="mlp", epochs=15, seed=3)
    for key in ("leaf_ids", "leaf_probs", "lineage_probs"):
        np.testing.assert_array_equal(a.summary[key], b.summary[key])
    assert not np.array_equal(a.summary["leaf_probs"], c.summary["leaf_probs"])


def test_summarise_topk_rest_and_lineage():
    tax, species = _taxonomy()
    hierarchy = Hierarchy.from_labels(tax, species)
    probs = np.full((2, 9), 0.02)
    probs[0, 0], probs[0, 1] = 0.62, 0.24  # genus G0 gets 0.62 + 0.24 + 0.02
    probs[1] = 1 / 9  # flat: nothing below the family exceeds 0.5
    summary = summarise(probs, hierarchy, top_k=3)
    assert summary["leaf_ids"][0, :2].tolist() == hierarchy.leaf_ids[:2].tolist()
    np.testing.assert_allclose(summary["leaf_probs"].sum(1) + summary["rest_mass"], 1, atol=1e-6)
    assert summary["rest_mass"][0] == pytest.approx(1 - 0.62 - 0.24 - 0.02)
    assert summary["depth"].tolist() == [7, 5]
    assert summary["taxon_id"][0] == hierarchy.leaf_ids[0]
    assert tax.names[summary["taxon_id"][1]] == "f__F"
    assert summary["lineage_probs"][0, 5] == pytest.approx(0.88)
    assert summary["confidence"][0] == pytest.approx(0.62)

    table = to_table(np.array(["a", "b"]), summary, np.array([0, -1]))
    assert table.column("lineage_ids").to_pylist()[1] == tax.lineage_ids(summary["taxon_id"][1])
    dense = dense_probabilities(table, hierarchy.leaf_ids)
    np.testing.assert_allclose(dense.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(dense[0], probs[0], atol=1e-6)


def test_top_k_larger_than_leaf_count():
    tax, x, _, labels = _data(n=120)
    fit = _fit(x, labels, tax, folds=1, top_k=50, epochs=5)
    assert fit.summary["leaf_ids"].shape == (120, 9)
    np.testing.assert_allclose(fit.summary["rest_mass"], 0, atol=1e-5)


def test_head_roundtrip(tmp_path):
    tax, x, _, labels = _data(n=120)
    fit = _fit(x, labels, tax, folds=1, head="mlp", epochs=3)
    path = tmp_path / "h.head.safetensors"
    save_head(path, fit.final.head, {"embeddings": "e"})
    back = load_head(path)
    assert back.kind == "mlp" and back.leaf_ids.tolist() == fit.hierarchy.leaf_ids.tolist()
    with torch.inference_mode():
        a, b = fit.final.head(torch.from_numpy(x)), back(torch.from_numpy(x))
    torch.testing.assert_close(a, b)
    assert read_head_metadata(path)["provenance"] == {"embeddings": "e"}
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(SchemaError):
        load_head(path)


def test_bad_config():
    tax, x, _, labels = _data(n=50)
    with pytest.raises(UsageError):
        _fit(x, labels, tax, head="transformer")
    with pytest.raises(UsageError):
        _fit(x, labels, tax, folds=60)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_head_agrees_with_cpu():
    tax, x, _, labels = _data(n=450)
    cpu = _fit(x, labels, tax, folds=2)
    gpu = _fit(x, labels, tax, folds=2, device="cuda")
    agree = (cpu.summary["leaf_ids"][:, 0] == gpu.summary["leaf_ids"][:, 0]).mean()
    assert agree > 0.9
    assert next(gpu.final.head.buffers()).device.type == "cuda"
