"""Back-compat: every frozen store in tests/data/archives/ opens with today's code.

``store-v1`` was written by tdstore 0.1.0 (make_archive.py: ingest, two label sets, a
k-mer embedding set, soft labels, a subset, a run, metrics). Today's code must check
it, read every SQL view and every object, re-predict with its run, and train and
evaluate on it, or migrate it first (`tdstore migrate`). Archives are frozen: make a
new one only with a schema version bump, never regenerate an old one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from crashkit import raw_digests
from tdstore.schemas import SCHEMAS

import tdstore
from tdstore import migrate as mig

ARCHIVES = sorted(
    p for p in (Path(__file__).parent / "data" / "archives").glob("store-v*") if p.is_dir()
)
MAX_BYTES = 300 * 1024


def test_newest_archive_is_of_the_current_schemas():
    """A schema version bump fails here until make_archive.py writes store-v<N+1>."""
    newest = max(ARCHIVES, key=lambda p: int(p.name.removeprefix("store-v")))
    found = mig.inventory(tdstore.open(newest))
    assert [f for f in found if f.state != "current"] == []
    # Every declared object is in it (the embedding cache lives outside stores; the calls
    # cache is derived, never migrated, rebuilt by `tdstore sql` when its key differs).
    assert {f.schema for f in found} == set(SCHEMAS) - {"tdstore.embedding_cache", "tdstore.calls"}


@pytest.fixture(params=ARCHIVES, ids=lambda p: p.name)
def archive(request, tmp_path, monkeypatch):
    """A copy: tests never touch the committed files."""
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    return shutil.copytree(request.param, tmp_path / request.param.name)


@pytest.mark.parametrize("path", ARCHIVES, ids=lambda p: p.name)
def test_archive_is_small_and_reading_leaves_it_untouched(path, cli, monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    assert sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) < MAX_BYTES
    before = raw_digests(path)
    reads = (
        ["info", path],
        ["check", path, "--deep"],
        ["sql", path, "SELECT * FROM runs"],
        ["migrate", path, "--dry-run", "--inventory"],
    )
    for argv in reads:
        assert cli(*argv).exit_code == 0, argv
    assert raw_digests(path) == before
    assert not (path / ".locks").exists()


def test_migrate_then_check(archive, cli):
    result = cli("migrate", archive, "--dry-run")
    assert result.exit_code == 0, result.stderr
    if "would migrate" in result.stdout:
        assert cli("migrate", archive).exit_code == 0
    assert all(f.state == "current" for f in mig.inventory(tdstore.open(archive)))
    result = cli("check", archive, "--deep")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no leftovers either


def test_sql_reads_every_view(archive, cli):
    from tdstore.sql import VIEWS

    for view in VIEWS:
        result = cli("sql", archive, f"SELECT count(*) AS n FROM {view}", "--format", "csv")
        assert result.exit_code == 0, (view, result.stderr)
        assert int(result.stdout.splitlines()[-1]) > 0, view


def test_every_object_reads(archive):
    from tdstore.labels import label_vector
    from tdstore.student import runs
    from tdstore.subsets import load_rows
    from tdstore.teacher.embed_store import load_embeddings
    from tdstore.teacher.soft_labels import dense_probabilities, load_soft_labels

    store = tdstore.open(archive)
    n = store.n_contigs
    assert len(store.contig_ids()) == n and len(list(store.iter_sequences())) == n
    assert store.tnf()[:].shape == (n, 103) and store.abundance()[:].shape == (n, 2)
    assert store.load_features().shape[0] == n
    assert (label_vector(store, "gold") > 0).all()
    assert load_embeddings(store, "kmer4")[0].shape == (n, 136)
    table, meta = load_soft_labels(store, "kmer4.mmseqs")
    assert np.allclose(dense_probabilities(table, meta["leaf_ids"]).sum(axis=1), 1, atol=1e-3)
    assert 0 < load_rows(store, "long").size <= n
    assert runs.load_finished_run(store, "kd")["status"] == "finished"
    assert runs.load_predictions(store, "kd")[0].num_rows == n
    assert runs.load_metrics(store, "kd") is not None


def test_old_run_predicts_and_new_runs_train_and_evaluate(archive, cli):
    from tdstore.student import runs

    store = tdstore.open(archive)
    old, _ = runs.load_predictions(store, "kd")
    result = cli("predict", archive, "kd")  # the archived weights load and give the same calls
    assert result.exit_code == 0, result.stderr
    new, _ = runs.load_predictions(tdstore.open(archive), "kd")
    assert new.column("taxon_id").equals(old.column("taxon_id"))
    args = ["--labels", "mmseqs", "--epochs", "3", "--batch-size", "16", "--patience", "0"]
    result = cli("train", archive, *args, "--soft-labels", "kmer4.mmseqs", "--name", "again")
    assert result.exit_code == 0, result.stderr
    result = cli(
        "teach",
        archive,
        "--embeddings",
        "kmer4",
        "--labels",
        "gold",
        "--folds",
        "1",
        "--epochs",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    result = cli("evaluate", archive, "again", "kd", "--gold", "gold", "--labels", "mmseqs")
    assert result.exit_code == 0, result.stderr
    assert cli("check", archive, "--deep").exit_code == 0


# ----- the migration machinery, on a pretend version bump ------------------------------------
def _bump_subset_tag(path: Path) -> None:
    import pyarrow.parquet as pq
    from tdstore.schemas import METADATA_VERSION

    from tdstore.atomic import atomic_path

    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[METADATA_VERSION.encode()] = b"2"
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def test_migrate_upgrades_through_a_registered_step(archive, cli, monkeypatch):
    spec = SCHEMAS["tdstore.subset"]
    monkeypatch.setitem(SCHEMAS, "tdstore.subset", dataclasses.replace(spec, version=2))
    before = raw_digests(archive)
    # No step registered: refused before anything is touched.
    result = cli("migrate", archive)
    assert result.exit_code == 5
    assert "no migration of tdstore.subset from version 1" in result.stderr
    assert raw_digests(archive) == before
    monkeypatch.setitem(mig.STEPS, ("tdstore.subset", 1), _bump_subset_tag)
    result = cli("migrate", archive, "--dry-run")
    assert result.stdout.strip() == "would migrate subsets/long.parquet: tdstore.subset v1 -> v2"
    assert raw_digests(archive) == before
    result = cli("migrate", archive)
    assert result.exit_code == 0 and "migrated subsets/long.parquet" in result.stdout
    assert "all at the current schema versions" in cli("migrate", archive).stdout
    assert cli("check", archive, "--deep").exit_code == 0


def test_newer_objects_refused(archive, cli):
    path = archive / "subsets" / "long.parquet"
    _bump_subset_tag(path)  # as if written by a future tdstore
    result = cli("migrate", archive)
    assert result.exit_code == 5 and "newer than this tdstore" in result.stderr


def _strip_parquet_tag(path: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({}), path)


def _strip_zarr_tag(path: Path) -> None:
    import json

    node = json.loads((path / "zarr.json").read_text())
    node["attributes"].pop("tdstore")
    (path / "zarr.json").write_text(json.dumps(node))


@pytest.mark.parametrize(
    ("rel", "strip"),
    [("labels/gold.parquet", _strip_parquet_tag), ("embeddings/kmer4.zarr", _strip_zarr_tag)],
    ids=["parquet", "zarr"],
)
def test_untagged_objects_are_problems_migrate_cannot_fix(archive, cli, rel, strip):
    """migrate used to skip them and say "all at the current schema versions", exit 0."""
    strip(archive / rel)
    before = raw_digests(archive)
    checked = cli("check", archive)
    assert checked.exit_code == 5 and "no tdstore schema tag" in checked.stderr, checked.stderr
    for argv in (["migrate", archive, "--dry-run"], ["migrate", archive]):
        result = cli(*argv)
        assert result.exit_code == checked.exit_code, (argv, result.stdout, result.stderr)
        assert f"problem: {rel}: no tdstore schema tag (expected tdstore." in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert "cannot be migrated" in result.stderr
        assert "current schema versions" not in result.stdout
    assert raw_digests(archive) == before
    with pytest.raises(tdstore.errors.SchemaError, match="no tdstore schema tag"):
        mig.plan(tdstore.open(archive))
