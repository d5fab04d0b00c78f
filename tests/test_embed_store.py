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
    for bad in ("2/2", "x", "-1/3", "1/2/3"):
        with pytest.raises(UsageError):
            parse_shard(bad, env={})


def _array_task(task: int, first: int, last: int, step: int, count: int) -> dict[str, str]:
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_ARRAY_TASK_COUNT": str(count),
    }


def test_parse_shard_stepped_slurm_array_covers_every_worker():
    """--array=0-14:2 is 8 tasks with IDs 0, 2, ..., 14: workers 0..7, none skipped."""
    workers = [parse_shard(None, env=_array_task(t, 0, 14, 2, 8)) for t in range(0, 15, 2)]
    assert workers == [(i, 8) for i in range(8)]
    assert [parse_shard(None, env=_array_task(t, 3, 9, 3, 3))[0] for t in (3, 6, 9)] == [0, 1, 2]
    # Older SLURM without MIN/MAX/STEP: a plain 0-based array.
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}) == (
        2,
        3,
    )
    # A list (--array=1,3,7) has no constant step: refused, not mapped onto wrong shards.
    with pytest.raises(UsageError, match="not one evenly stepped range"):
        parse_shard(None, env=_array_task(3, 1, 7, 1, 3))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": ""}, "SLURM_ARRAY_TASK_COUNT"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_COUNT": "2",
                "SLURM_ARRAY_TASK_MIN": "a",
            },
            "SLURM_ARRAY_TASK_MIN",
        ),
        ({**_array_task(2, 0, 2, 2, 2), "SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_STEP"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK"),
    ],
)
def test_parse_shard_bad_environment_names_the_variable(env, variable):
    with pytest.raises(UsageError, match=variable):
        parse_shard(None, env=env)


def test_bad_slurm_variable_is_one_line_exit_2(tmp_path, cli, seqs, monkeypatch):
    store = make_store(tmp_path / "s", seqs)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    result = cli("embed", store.path, "--model", "kmer:4")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: SLURM_ARRAY_TASK_ID='x': expected an integer"
    assert embed_store.list_names(store) == []


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
    again = run(store, tiny, batch_tokens=4096, n_shards=2)
    assert again["status"] == "up to date" and again["fingerprint"] == first["fingerprint"]
    assert run(store, tiny, batch_tokens=4096)["status"] == "up to date"
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


def _killed_before_any_shard(store, model, monkeypatch, **options) -> str:
    """Run embed until its first shard is about to be published, then 'kill' it."""

    def killed(path, shard, marker):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(embed_run, "write_marker", killed)
        with pytest.raises(KeyboardInterrupt):
            run(store, model, **options)
    name = options.get("name", "tiny-mean")
    assert embed_store.status(store, name)["done"] == 0
    return name


def test_a_set_with_no_finished_shard_is_replaced_not_blocking(
    tmp_path, tiny, seqs, cli, monkeypatch
):
    """A first run that finished nothing (a model that failed to load) must not block the name."""
    store = make_store(tmp_path / "s", seqs)
    first = {"name": _killed_before_any_shard(store, tiny, monkeypatch, n_shards=2)}
    first["fingerprint"] = embed_store.read_attrs(store, first["name"])["fingerprint"]
    path = embed_store.set_path(store, first["name"])
    assert path.exists()
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


def test_no_replacement_while_a_worker_holds_a_shard_lock(tmp_path, tiny, seqs, cli, monkeypatch):
    """A set with nothing finished but a live worker computing it must not be discarded."""
    store = make_store(tmp_path / "s", seqs)
    name = _killed_before_any_shard(store, tiny, monkeypatch, n_shards=3)
    before = embed_store.read_attrs(store, name)
    with store.lock(embed_store.shard_lock_key(name, 2)):  # the "first" worker, computing
        with pytest.raises(ConflictError, match=r"being computed by another process \(shard 2"):
            run(store, tiny, pooling="last", name=name)
        result = cli("embed", store.path, "--model", "kmer:4", "--name", name)
        assert result.exit_code == 6 and result.stderr.count("\n") == 1, result.stderr
        assert "being computed by another process" in result.stderr
    assert embed_store.read_attrs(store, name) == before  # untouched
    # Once the worker is gone the empty set is replaced as before.
    assert run(store, tiny, pooling="last", name=name)["status"] == "done"


def test_worker_refuses_to_publish_into_a_replaced_set(tmp_path, tiny, seqs, monkeypatch):
    """Worker A opened the set; B replaced it (other settings) before A took a shard lock."""
    store = make_store(tmp_path / "s", seqs)
    real = embed_run.open_or_create
    calls: list[str] = []

    def replaced_right_after_opening(*args, **kwargs):
        attrs = real(*args, **kwargs)
        if not calls:  # A: another process replaces the set now
            calls.append("A")
            monkeypatch.setattr(embed_run, "open_or_create", real)
            b = run(store, tiny, pooling="last", name="r", n_shards=4, max_shards=1)
            assert b["shards_done"] == 1
        return attrs

    monkeypatch.setattr(embed_run, "open_or_create", replaced_right_after_opening)
    with pytest.raises(ConflictError, match="replaced or changed by another process"):
        run(store, tiny, name="r", n_shards=6)
    attrs = embed_store.read_attrs(store, "r")
    assert attrs["pooling"] == "last" and attrs["n_shards"] == 4
    state = embed_store.status(store, "r")
    assert state["done"] == 1 and state["pending"] == [1, 2, 3]
    assert run(store, tiny, pooling="last", name="r")["status"] == "done"
    assert embed_store.check(store, "r", deep=True) == []
    reference = make_store(tmp_path / "ref", seqs)
    run(reference, tiny, pooling="last", name="r", n_shards=4)
    assert load_embeddings(store, "r")[0].tobytes() == load_embeddings(reference, "r")[0].tobytes()


def test_stray_marker_is_not_counted_as_done(tmp_path, cli, seqs):
    """A marker of another set or layout in shards/<i> promises nothing: the shard is pending."""
    store = make_store(tmp_path / "s", seqs)
    assert cli("embed", store.path, "--model", "kmer:4", "--n-shards", "4").exit_code == 0
    assert cli("embed", store.path, "--model", "kmer:5", "--n-shards", "2").exit_code == 0
    four, five = (embed_store.set_path(store, n) for n in ("kmer4", "kmer5"))
    shutil.copy(four / "shards" / "1" / "zarr.json", five / "shards" / "1" / "zarr.json")
    embed_store.discard(five / "shards" / "0")
    wrong_rows = {**embed_store.read_marker(five, 1), "rows": [0, 6]}
    embed_store.write_marker(five, 0, wrong_rows)
    assert embed_store.read_marker(five, 0, embed_store.read_attrs(store, "kmer5")) is None
    state = embed_store.status(store, "kmer5")
    assert state["done"] == 0 and state["pending"] == [0, 1] and state["rows_done"] == 0
    with pytest.raises(IncompleteError, match=r"2 of 2 shards pending \(0, 1\)"):
        load_embeddings(store, "kmer5")
    assert any("does not match" in p for p in embed_store.check(store, "kmer5", deep=False))
    result = cli("embed", store.path, "--model", "kmer:5")
    assert result.exit_code == 0 and "finished 2 shard(s)" in result.stdout, result.stdout
    assert embed_store.check(store, "kmer5", deep=True) == []


def test_cache_ignores_a_set_of_other_store_content(tmp_path, cli, seqs):
    """A set copied in from another store (other refhash) maps its rows to other contigs."""
    from tdstore.teacher.kmer import kmer_matrix

    one = make_store(tmp_path / "one", seqs)
    assert cli("embed", one.path, "--model", "kmer:4", "--name", "src").exit_code == 0
    flipped = seqs[::-1]
    two = make_store(tmp_path / "two", flipped, ids=[f"r{i}" for i in range(len(seqs))])
    shutil.copytree(embed_store.set_path(one, "src"), embed_store.set_path(two, "src"))
    summary = embed(two, "kmer:4", name="dst", show_progress=False)
    assert summary["copied"] == 0 and summary["computed"] == len(seqs)
    vectors, _ = load_embeddings(two, "dst")
    np.testing.assert_array_equal(vectors, kmer_matrix(flipped, 4).astype(np.float16))


def test_cache_skips_a_corrupt_source_shard(tmp_path, cli, seqs):
    """A corrupt source shard is recomputed, never copied under a fresh, valid checksum."""
    from tdstore.teacher.kmer import kmer_matrix

    expected = kmer_matrix(seqs, 4).astype(np.float16)
    store = make_store(tmp_path / "s", seqs)
    assert (
        cli("embed", store.path, "--model", "kmer:4", "--n-shards", "4", "--name", "src").exit_code
        == 0
    )
    chunk = embed_store.set_path(store, "src") / "vectors" / "c" / "1" / "0"  # rows 3-5
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert "shard 1 (rows 3-5) is corrupt" in " ".join(embed_store.check(store, "src", deep=True))
    copy = embed(store, "kmer:4", name="dst", n_shards=2, show_progress=False)
    assert copy["copied"] == 9 and copy["computed"] == 3
    np.testing.assert_array_equal(load_embeddings(store, "dst")[0], expected)
    assert embed_store.check(store, "dst", deep=True) == []
    # Repairing the source (delete the shard, re-run) gives the true rows back.
    embed_store.discard(embed_store.set_path(store, "src") / "shards" / "1")
    repaired = embed(store, "kmer:4", name="src", show_progress=False)
    assert repaired["shards_done"] == 1
    np.testing.assert_array_equal(load_embeddings(store, "src")[0], expected)
    assert embed_store.check(store, "src", deep=True) == []


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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--n-shards", "0"], "--n-shards 0: expected a positive whole number"),
        (["--n-shards", "-2"], "--n-shards -2: expected a positive whole number"),
        (["--max-shards", "0"], "--max-shards 0: expected a positive whole number"),
        (["--max-shards", "-1"], "--max-shards -1: expected a positive whole number"),
        (["--batch-tokens", "0"], "--batch-tokens 0: expected a positive whole number"),
        (["--pooling", "mean"], "--pooling: only for a model directory, not --model kmer:4"),
        (["--layer", "0", "--dtype", "fp32"], "--layer, --dtype: only for a model directory"),
        (["--window", "64"], "--window: only for a model directory"),
        (["--batch-tokens", "512"], "--batch-tokens: only for a model directory"),
    ],
)
def test_nonsense_embed_options_refused(tmp_path, cli, seqs, options, message):
    store = make_store(tmp_path / "s", seqs)
    result = cli("embed", store.path, "--model", "kmer:4", *options)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert embed_store.list_names(store) == []  # nothing created


def test_model_spec_with_a_space_and_other_shard_count_refused(tmp_path, cli, seqs):
    store = make_store(tmp_path / "s", seqs)
    result = cli("embed", store.path, "--model", "kmer: 4")
    assert result.exit_code == 2 and "expected kmer:K" in result.stderr
    assert cli("embed", store.path, "--model", "kmer:4", "--n-shards", "3").exit_code == 0
    other = cli("embed", store.path, "--model", "kmer:4", "--n-shards", "5")
    assert other.exit_code == 2 and other.stderr.count("\n") == 1
    assert "embedding set 'kmer4' exists with 3 shards" in other.stderr
    # The same count, or a count capped to the same layout, resumes.
    assert "up to date" in cli("embed", store.path, "--model", "kmer:4", "--n-shards", "3").stdout
    wide = cli("embed", store.path, "--model", "kmer:5", "--n-shards", "100")
    assert wide.exit_code == 0 and embed_store.read_attrs(store, "kmer5")["n_shards"] == 12
    again = cli("embed", store.path, "--model", "kmer:5", "--n-shards", "100")
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_require_complete_fails_a_partial_worker_and_set(tmp_path, cli, seqs):
    """Workflows mark a shard job done only if its shards are; a skipped (locked) one is not."""
    store = make_store(tmp_path / "s", seqs)
    args = ["embed", store.path, "--model", "kmer:4", "--n-shards", "4"]
    with store.lock(embed_store.shard_lock_key("kmer4", 2)):  # another process computes it
        partial = cli(*args, "--shard", "0/2", "--require-complete")
    assert partial.exit_code == 4, partial.stderr
    assert "embeddings/kmer4: partial" in partial.stdout
    assert partial.stderr.strip().splitlines()[-1] == (  # after the progress line
        "error: embeddings/kmer4: worker 0/2 has 1 shard(s) unfinished (2); another process "
        "holds them or --max-shards stopped early; re-run the same command to finish"
    )
    status = cli("embed", "status", store.path, "kmer4", "--require-complete")
    assert status.exit_code == 4 and "pending shards: 1, 2, 3" in status.stdout
    assert "kmer4 (3 of 4 shards pending)" in status.stderr
    assert cli("embed", "status", store.path).exit_code == 0  # without the flag: a report
    assert cli(*args, "--shard", "0/2", "--require-complete").exit_code == 0
    assert cli(*args, "--require-complete").exit_code == 0
    assert cli("embed", "status", store.path, "--require-complete").exit_code == 0
    empty = make_store(tmp_path / "empty", seqs)
    assert cli("embed", "status", empty.path, "--require-complete").exit_code == 4
