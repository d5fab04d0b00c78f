"""Embedding sets in a store: shards, resume, fingerprint, content cache, check, CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tdstore
from tdstore.errors import ConflictError, IncompleteError, ModelError, UsageError
from tdstore.teacher import embed_run, embed_store
from tdstore.teacher.embed_run import embed, parse_shard
from tdstore.teacher.embed_store import load_embeddings, shard_layout
from tdstore.teacher.testing import random_dna


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tdstore.teacher.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", max_position_embeddings=32)


@pytest.fixture(scope="module")
def seqs():
    # 40-260 bp is 1 to ~5 windows of 30 sequence tokens for the tiny tokenizer.
    return random_dna(12, (40, 260), seed=7)


def make_store(path, seqs, ids=None):
    from tdstore.ingest.core import ingest

    ids = ids or [f"c{i}" for i in range(len(seqs))]
    fasta = path.parent / f"{path.name}.fna"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s in zip(ids, seqs, strict=True)))
    store = tdstore.init(path)
    ingest(store, fasta, min_length=1, show_progress=False)
    return tdstore.open(path)


def run(store, model, **options):
    options.setdefault("device", "cpu")
    options.setdefault("dtype", "fp32")
    options.setdefault("show_progress", False)
    return embed(store, str(model), **options)


def marker_files(store, name):
    folder = embed_store.set_path(store, name) / "shards"
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("*/zarr.json")}


# ----- pure helpers ---------------------------------------------------------------------------


def test_shard_layout_follows_the_chunk_grid():
    per_chunk, starts = shard_layout(100_000, 1536)
    assert per_chunk == (2 << 20) // (1536 * 2)
    assert starts[0] == 0 and starts[-1] == 100_000 and len(starts) - 1 == 64
    assert all(s % per_chunk == 0 for s in starts[:-1])
    assert shard_layout(10, 32) == (10, [0, 10])  # small sets: one shard
    assert shard_layout(10, 32, workers=3) == (4, [0, 4, 8, 10])
    _, starts = shard_layout(12, 32, n_shards=4)
    assert starts == [0, 3, 6, 9, 12]
    _, starts = shard_layout(10_000_000, 1536)
    assert max(np.diff(starts)) <= embed_store.MAX_SHARD_ROWS


def test_parse_shard_sources():
    assert parse_shard("1/4", env={}) == (1, 4)
    assert parse_shard(None, env={}) == (0, 1)
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard(None, env=slurm) == (2, 4)
    assert parse_shard(None, env={"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    for bad in ("2/2", "x", "-1/3"):
        with pytest.raises(UsageError):
            parse_shard(bad, env={})


# ----- model embedding sets ---------------------------------------------------------------------


def test_shards_run_separately_equal_one_full_run(tmp_path, tiny, seqs):
    full = make_store(tmp_path / "full", seqs)
    summary = run(full, tiny, n_shards=4, batch_tokens=96)
    assert summary["status"] == "done" and summary["computed"] == len(seqs)
    expected, attrs = load_embeddings(full, summary["name"])
    assert expected.shape == (12, 32) and attrs["n_shards"] == 4 and attrs["window"] == 32

    split = make_store(tmp_path / "split", seqs)
    later = run(split, tiny, n_shards=4, batch_tokens=96, shard="1/2")
    assert later["shards_done"] == 2 and later["status"] == "done"
    with pytest.raises(IncompleteError, match=r"2 of 4 shards pending \(0, 2\)"):
        load_embeddings(split, later["name"])
    run(split, tiny, n_shards=4, batch_tokens=96, shard="0/2")
    found, _ = load_embeddings(split, later["name"])
    assert found.tobytes() == expected.tobytes()  # bit for bit
    windows = embed_store.load_n_windows(split, later["name"])
    np.testing.assert_array_equal(windows, embed_store.load_n_windows(full, summary["name"]))
    assert windows.max() > 1
    picked, _ = load_embeddings(split, later["name"], rows=np.array([5, 0, 5]))
    np.testing.assert_array_equal(picked, expected[[5, 0, 5]])


def test_resume_computes_only_the_rest(tmp_path, tiny, seqs):
    store = make_store(tmp_path / "s", seqs)
    first = run(store, tiny, n_shards=4, max_shards=2)
    assert first["status"] == "partial" and first["computed"] == 6 and first["shards_left"] == 2
    before = marker_files(store, first["name"])
    assert len(before) == 2
    second = run(store, tiny, n_shards=4)
    assert second["computed"] == 6 and second["shards_done"] == 2 and second["status"] == "done"
    after = marker_files(store, first["name"])
    assert all(after[p] == before[p] for p in before)  # finished shards untouched
    assert run(store, tiny)["status"] == "up to date"
    state = embed_store.status(store, first["name"])
    assert state["done"] == 4 and state["computed"] == 12 and state["tokens"] > 0


def test_killed_run_resumes(tmp_path, tiny, seqs, monkeypatch):
    store = make_store(tmp_path / "s", seqs)
    real = embed_run.write_marker
    written: list[int] = []

    def killed_after_one(path, shard, marker):
        if written:  # the second shard's chunks are written, its marker never is
            raise KeyboardInterrupt
        written.append(shard)
        real(path, shard, marker)

    monkeypatch.setattr(embed_run, "write_marker", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(store, tiny, n_shards=3)
    monkeypatch.undo()
    name = "tiny-mean"
    assert embed_store.status(store, name)["pending"] == [1, 2]
    assert any("2 of 3 shards pending" in p for p in embed_store.check(store, name, False))
    resumed = run(store, tiny, n_shards=3)
    assert resumed["computed"] == 8 and resumed["shards_done"] == 2
    assert embed_store.check(store, name, True) == []
    reference = make_store(tmp_path / "ref", seqs)
    run(reference, tiny, n_shards=3)
    assert (
        load_embeddings(store, name)[0].tobytes() == load_embeddings(reference, name)[0].tobytes()
    )


def test_fingerprint_ignores_batch_size_tracks_pooling(tmp_path, tiny, seqs):
    store = make_store(tmp_path / "s", seqs)
    first = run(store, tiny, batch_tokens=64, n_shards=2)
    again = run(store, tiny, batch_tokens=4096, n_shards=5)
    assert again["status"] == "up to date" and again["fingerprint"] == first["fingerprint"]
    with pytest.raises(ConflictError, match="differs in: pooling"):
        run(store, tiny, pooling="last", name=first["name"])
    last = run(store, tiny, pooling="last")
    assert last["name"] == "tiny-last" and last["fingerprint"] != first["fingerprint"]
    # Same settings under a new name: every contig is copied from the first set.
    copy = run(store, tiny, name="copy")
    assert copy["computed"] == 0 and copy["copied"] == len(seqs)
    assert (
        load_embeddings(store, "copy")[0].tobytes()
        == load_embeddings(store, "tiny-mean")[0].tobytes()
    )
    assert sorted(embed_store.list_names(store)) == ["copy", "tiny-last", "tiny-mean"]
    assert embed_store.describe(store, "tiny-last")["pooling"] == "last"


def test_a_set_with_no_finished_shard_is_replaced_not_blocking(tmp_path, tiny, seqs, cli):
    """A first run that finished nothing (a model that failed to load) must not block the name."""
    store = make_store(tmp_path / "s", seqs)
    first = run(store, tiny, n_shards=2, max_shards=0)
    path = embed_store.set_path(store, first["name"])
    assert path.exists() and first["shards_done"] == 0
    unfinished = cli("check", store.path)
    assert unfinished.exit_code == 4, unfinished.stderr  # incomplete, not damaged
    assert "unfinished" in unfinished.stderr
    second = run(store, tiny, pooling="last", name=first["name"], n_shards=2)
    assert second["fingerprint"] != first["fingerprint"] and second["shards_done"] == 2
    assert embed_store.check(store, first["name"], True) == []
    assert not list(path.parent.glob("*.tmp-*"))
    # with finished work the conflict stands
    with pytest.raises(ConflictError, match="differs in: pooling"):
        run(store, tiny, name=first["name"])


def test_cache_dir_shared_between_stores(tmp_path, tiny, seqs):
    cache = tmp_path / "cache"
    one = make_store(tmp_path / "one", seqs)
    first = run(one, tiny, cache=cache)
    parts = list((cache / first["fingerprint"]).glob("part-*.parquet"))
    assert parts and (cache / first["fingerprint"] / "info.json").exists()
    extra = random_dna(1, 90, seed=99)
    two = make_store(tmp_path / "two", seqs[::-1] + extra)
    second = run(two, tiny, cache=cache)
    assert second["copied"] == len(seqs) and second["computed"] == 1
    a, _ = load_embeddings(one, first["name"])
    b, _ = load_embeddings(two, second["name"])
    assert b[: len(seqs)][::-1].tobytes() == a.tobytes()


def test_values_beyond_float16_refused(tmp_path, tiny, seqs):
    import torch
    from transformers import MistralForCausalLM

    loud = shutil.copytree(tiny, tmp_path / "loud")
    model = MistralForCausalLM.from_pretrained(str(loud))
    with torch.no_grad():
        model.model.norm.weight.mul_(1e6)
    model.save_pretrained(str(loud))
    store = make_store(tmp_path / "s", seqs)
    with pytest.raises(ModelError, match="float16"):
        run(store, loud)


# ----- the k-mer teacher and the CLI -------------------------------------------------------------


def test_kmer_set_and_cli(tmp_path, cli, seqs):
    from tdstore.teacher.kmer import kmer_matrix

    store = make_store(tmp_path / "s", seqs)
    result = cli("embed", store.path, "--model", "kmer:4", "--n-shards", "4")
    assert result.exit_code == 0, result.stderr
    assert "embeddings/kmer4: done" in result.stdout and "12 contigs computed" in result.stdout
    vectors, attrs = load_embeddings(store, "kmer4")
    np.testing.assert_array_equal(vectors, kmer_matrix(seqs, 4).astype(np.float16))
    assert attrs["hidden"] == 136 and attrs["teacher"] == "kmer"
    assert (store.path / "embeddings" / "kmer4.zarr" / "vectors" / "zarr.json").exists()
    status = cli("embed", "status", store.path)
    assert status.exit_code == 0 and "kmer4: 4/4 shards done" in status.stdout
    again = cli("embed", store.path, "--model", "kmer:4")
    assert again.exit_code == 0 and "up to date" in again.stdout
    assert cli("embed", store.path, "--model", str(tmp_path / "nope")).exit_code == 7
    assert cli("embed", store.path, "--model", "kmer:4", "--shard", "3/2").exit_code == 2
    assert cli("check", store.path, "--deep").exit_code == 0
    # Flip a byte inside shard 1's chunk (rows 3-5): a deep check names the shard.
    chunk = store.path / "embeddings" / "kmer4.zarr" / "vectors" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    problems = embed_store.check(store, "kmer4", deep=True)
    assert len(problems) == 1 and "shard 1 (rows 3-5) is corrupt" in problems[0]
    assert cli("check", store.path, "--deep").exit_code == 5
    assert cli("check", store.path).exit_code == 0  # shallow: markers only
