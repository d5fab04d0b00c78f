"""Concurrency: real processes writing and reading one store at once.

Two embedding workers (different shards, or the same shard spec) and readers; two
label imports growing the one taxonomy; two train runs with different names (both
finish); two with the same name (one wins, the other gets ConflictError, exit 6, from
the file lock). Afterwards `tdstore check --deep` passes and results equal a lone run's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from crashkit import fresh_copy, step_env, tiny_simulation, tree_digests

import tdstore
from tdstore.check import check_store

# 3 epochs: OneCycleLR with 4 total steps divides by zero (reported to the student area).
TRAIN = ["--epochs", "3", "--batch-size", "64", "--patience", "0", "--no-teacher"]
# Shard markers record which worker (i/N) and how many rows it took from the cache.
WORKER = ("worker",)


def _cli(*args: str) -> int:
    from tdstore.cli.main import main

    return main([str(a) for a in args])


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tdstore.cli.main", *map(str, args)],
        env=step_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out + err


@pytest.fixture(scope="module")
def conc(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TDSTORE_QUIET", "1")
        root = tmp_path_factory.mktemp("conc")
        sim = tiny_simulation(root / "sim", seed=5)
        base = root / "base"
        ingest = [
            "ingest",
            base,
            "--fasta",
            sim["fasta_path"],
            "--abundance",
            sim["abundance_path"],
        ]
        assert _cli(*ingest) == 0
        labelled = fresh_copy(base, root / "labelled")
        assert (
            _cli("labels", "import", labelled, "mmseqs", sim["labels_path"], "-f", "taxometer") == 0
        )
        reference = fresh_copy(base, root / "reference")
        assert _cli("embed", reference, "--model", "kmer:4", "--n-shards", "8") == 0
        yield {
            "root": root,
            "sim": sim,
            "base": base,
            "labelled": labelled,
            "embeddings": tree_digests(reference, "embeddings", ignore=WORKER),
        }


def _read_while(workers: list[subprocess.Popen[str]], store: Path) -> int:
    """Read the store (info + SQL) in this process until every worker has exited."""
    from tdstore.info import store_info

    reads = 0
    while any(w.poll() is None for w in workers) or reads == 0:
        handle = tdstore.open(store)
        info = store_info(handle)
        assert info["contigs"] == handle.n_contigs
        count = handle.sql("SELECT count(*) AS n FROM contigs WHERE kept").column("n")[0].as_py()
        assert count == handle.n_contigs
        handle.sql("SELECT * FROM embeddings")
        reads += 1
        time.sleep(0.05)
    return reads


@pytest.mark.parametrize("shards", [("0/2", "1/2"), ("0/1", "0/1")], ids=["split", "same"])
def test_two_embed_workers_and_readers(conc, tmp_path, shards):
    store = fresh_copy(conc["base"], tmp_path / "s")
    workers = [
        _start("embed", store, "--model", "kmer:4", "--n-shards", "8", "--shard", s) for s in shards
    ]
    reader = _start("info", store)
    reads = _read_while([*workers, reader], store)
    results = [_finish(w) for w in workers]
    assert all(code == 0 for code, _ in results), results
    assert _finish(reader)[0] == 0
    assert reads >= 1
    assert check_store(tdstore.open(store), deep=True) == []
    # Every shard was computed once and the set equals one worker's.
    assert tree_digests(store, "embeddings", ignore=WORKER) == conc["embeddings"]


def test_two_label_imports_share_the_taxonomy(conc, tmp_path):
    store = fresh_copy(conc["base"], tmp_path / "s")
    sim = conc["sim"]
    a = _start("labels", "import", store, "noisy", sim["labels_path"], "-f", "taxometer")
    b = _start("labels", "import", store, "gold", sim["gold_path"], "-f", "taxometer")
    results = [_finish(a), _finish(b)]
    assert all(code == 0 for code, _ in results), results
    handle = tdstore.open(store)
    assert handle.label_sets() == ["gold", "noisy"]
    assert check_store(handle, deep=True) == []
    # Both sets resolve against the one tree: lineages equal a lone import's.
    lone = fresh_copy(conc["base"], tmp_path / "lone")
    assert _cli("labels", "import", lone, "gold", sim["gold_path"], "-f", "taxometer") == 0
    from tdstore.labels import lineage_table

    columns = ["contig_id", "species", "genus", "family"]
    assert (
        lineage_table(handle, "gold")
        .select(columns)
        .equals(lineage_table(tdstore.open(lone), "gold").select(columns))
    )


def test_train_runs_at_once_different_and_same_names(conc, tmp_path):
    """'a' and 'b' both finish; of two 'b' one wins, the other gets exit 6 (the lock)."""
    store = fresh_copy(conc["labelled"], tmp_path / "s")
    names = ["a", "b", "b"]
    runs = [_start("train", store, "--labels", "mmseqs", "--name", n, *TRAIN) for n in names]
    results = [_finish(r) for r in runs]
    assert results[0][0] == 0, results[0]
    same = sorted(results[1:])
    assert [code for code, _ in same] == [0, 6], same
    loser = [line for line in same[1][1].splitlines() if line.startswith("error:")]
    # Usually the lock ("being written by another process"); if the winner was already
    # done, "exists". Either way one clear line, and the winner's run is intact.
    assert len(loser) == 1 and ("being written" in loser[0] or "exists" in loser[0]), loser
    handle = tdstore.open(store)
    from tdstore.student.runs import list_names, load_finished_run

    assert list_names(handle) == ["a", "b"]
    assert [load_finished_run(handle, n)["status"] for n in ("a", "b")] == ["finished"] * 2
    assert check_store(handle, deep=True) == []
    assert not list((store / "runs").glob("*.tmp-*"))


def test_held_lock_gives_conflict(conc, tmp_path, cli, monkeypatch):
    """A writer holding the run's lock: a second train of that name stops at once (exit 6)."""
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    store = fresh_copy(conc["labelled"], tmp_path / "s")
    handle = tdstore.open(store)
    with handle.lock("run-held"):
        result = cli("train", store, "--labels", "mmseqs", "--name", "held", *TRAIN)
        assert result.exit_code == 6
        assert (
            result.stderr.strip() == f"error: {store}: run-held is being written by another process"
        )
        # Leftover removal refuses while any writer holds a lock.
        result = cli("check", store, "--clean")
        assert result.exit_code == 6 and "is writing" in result.stderr
    assert not (store / "runs" / "held").exists()


def _hold_lock(store: Path, key: str) -> subprocess.Popen[str]:
    """Another live process holding one of the store's locks until its stdin closes."""
    code = (
        "import sys, tdstore\n"
        "lock = tdstore.open(sys.argv[1]).lock(sys.argv[2])\n"
        "lock.__enter__()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(store), key],
        env=step_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_set_not_replaced_while_another_process_computes_it(conc, tmp_path):
    """A set with no finished shard yet, but a live worker on one: `embed` with other
    settings under that name is refused (exit 6) instead of deleting it under the worker."""
    from tdstore.teacher import embed_store
    from tdstore.teacher.embed_run import make_backend

    store = fresh_copy(conc["base"], tmp_path / "s")
    handle = tdstore.open(store)
    recipe = make_backend("kmer:4").recipe()
    embed_store.open_or_create(handle, "r", recipe, n_shards=6)  # the first worker's set
    before = embed_store.read_attrs(handle, "r")
    holder = _hold_lock(store, embed_store.shard_lock_key("r", 3))  # ... computing shard 3
    try:
        code, output = _finish(_start("embed", store, "--model", "kmer:5", "--name", "r"))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 6 and len(errors) == 1, output
    assert "being computed by another process (shard 3 is locked)" in errors[0]
    assert "Traceback" not in output
    assert embed_store.read_attrs(handle, "r") == before
    # The worker gone (its lock released), the empty set may be replaced.
    code, output = _finish(_start("embed", store, "--model", "kmer:5", "--name", "r"))
    assert code == 0, output
    assert embed_store.read_attrs(handle, "r")["model"] == "kmer:5"
    assert check_store(handle, deep=True) == []
