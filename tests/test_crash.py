"""Crash safety: SIGKILL ingest, embed, teach and train, then check, resume, compare.

Each trial kills the real CLI (a subprocess) at a kill point (tdstore._killpoints:
publication and progress points) or after a delay, then asserts that `tdstore check
--deep` finds nothing but resumable work, that the same command finishes the job, and
that the result equals an uninterrupted run's: bit-identical core/ and embeddings/
files, identical soft labels, and identical losses, weights and predictions of a
seeded CPU train. The default suite kills each step at a few points; the slow test at
>= 20 points per step.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from crashkit import (
    STORE,
    Outcome,
    Step,
    drop_volatile,
    fresh_copy,
    kill_trial,
    resumable,
    run_step,
    tiny_simulation,
    trace_points,
    tree_digests,
)

TEACH = ["--folds", "2", "--epochs", "4", "--seed", "1"]
# The training state is saved after every epoch: a killed run resumes from its last one.
TRAIN = ["--epochs", "3", "--batch-size", "64", "--seed", "2", "--patience", "0"]
TRAIN += ["--checkpoint-every", "0"]


# ----- what each step's result is ---------------------------------------------------------
def _table_digest(path: Path, spec) -> str:  # type: ignore[no-untyped-def]
    """Digest of a Parquet table's values and metadata, clock fields left out."""
    import pyarrow as pa

    from tdstore.tables import read_table

    table, meta = read_table(path, spec)
    meta.pop("head_sha256", None)  # of the head file's bytes (see _safetensors_digest)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue().to_pybytes())
    digest.update(json.dumps(drop_volatile(meta), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _safetensors_digest(path: Path) -> str:
    """Tensors and header metadata; not the bytes: safetensors orders metadata keys by hash."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), framework="numpy") as handle:
        digest.update(json.dumps(handle.metadata(), sort_keys=True).encode())
        for key in sorted(handle.keys()):
            digest.update(key.encode())
            digest.update(handle.get_tensor(key).tobytes())
    return digest.hexdigest()


def _teach_result(store: Path) -> dict[str, str]:
    from tdstore.schemas import declarations as S

    folder = store / "soft_labels"
    return {
        "table": _table_digest(folder / "kmer4.mmseqs.parquet", S.SOFT_LABELS),
        "head": _safetensors_digest(folder / "kmer4.mmseqs.head.safetensors"),
    }


def _train_result(store: Path) -> dict[str, str]:
    from tdstore.schemas import declarations as S

    folder = store / "runs" / "kd"
    doc = json.loads((folder / "run.json").read_text())
    metrics = {k: doc[k] for k in ("history", "best_epoch", "calibration", "counts", "status")}
    for epoch in metrics["history"]:
        epoch.pop("samples_per_s", None)
    return {
        "run": json.dumps(drop_volatile(metrics), sort_keys=True),
        "weights": _safetensors_digest(folder / "weights.safetensors"),
        "predictions": _table_digest(folder / "predictions.parquet", S.PREDICTIONS),
    }


def _steps(sim: dict) -> dict[str, Step]:
    return {
        "ingest": Step(
            "ingest",
            [
                "ingest",
                STORE,
                "--fasta",
                str(sim["fasta_path"]),
                "--abundance",
                str(sim["abundance_path"]),
            ],
            compare=lambda store: tree_digests(store, "core"),
            published=lambda store: (store / "core" / "core.json").exists(),
        ),
        "embed": Step(
            "embed",
            ["embed", STORE, "--model", "kmer:4", "--n-shards", "6"],
            compare=lambda store: tree_digests(store, "embeddings"),
        ),
        "teach": Step(
            "teach",
            ["teach", STORE, "--embeddings", "kmer4", "--labels", "mmseqs", *TEACH],
            compare=_teach_result,
            published=lambda store: (store / "soft_labels" / "kmer4.mmseqs.parquet").exists(),
        ),
        "train": Step(
            "train",
            [
                "train",
                STORE,
                "--labels",
                "mmseqs",
                "--soft-labels",
                "kmer4.mmseqs",
                "--name",
                "kd",
                *TRAIN,
            ],
            compare=_train_result,
            published=lambda store: (store / "runs" / "kd" / "run.json").exists(),
        ),
    }


def _cli(*args: str) -> int:
    from tdstore.cli.main import main

    return main([str(a) for a in args])


def _rerun(step: Step, store: Path) -> int:
    """The same command again, in this process (torch is imported once)."""
    return _cli(*step.args(store))


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    """A tiny simulated metagenome, a store template before each step, reference results."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed subprocesses run with OMP_NUM_THREADS=1
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TDSTORE_QUIET", "1")
        root = tmp_path_factory.mktemp("crash")
        sim = tiny_simulation(root / "sim", seed=11)
        steps = _steps(sim)
        templates = {"ingest": root / "t-ingest"}  # absent: ingest creates the store
        store = root / "t-embed"
        assert _rerun(steps["ingest"], store) == 0
        assert _cli("labels", "import", store, "mmseqs", sim["labels_path"], "-f", "taxometer") == 0
        templates["embed"] = store
        templates["teach"] = fresh_copy(store, root / "t-teach")
        assert _rerun(steps["embed"], templates["teach"]) == 0
        templates["train"] = fresh_copy(templates["teach"], root / "t-train")
        assert _rerun(steps["teach"], templates["train"]) == 0
        # Each template is the uninterrupted result of the step before it.
        reference = {
            "ingest": steps["ingest"].compare(templates["embed"]),
            "embed": steps["embed"].compare(templates["teach"]),
            "teach": steps["teach"].compare(templates["train"]),
        }
        ref = fresh_copy(templates["train"], root / "ref-train")
        assert _rerun(steps["train"], ref) == 0
        reference["train"] = steps["train"].compare(ref)
        yield {"root": root, "steps": steps, "templates": templates, "reference": reference}
    torch.set_num_threads(threads)


def _assert_recovered(outcome: Outcome, reference: dict[str, str], where: str) -> None:
    unexpected = [p for p in outcome.problems_after_kill if not resumable(p)]
    assert not unexpected, f"{where}: after the kill: {unexpected}"
    assert outcome.rerun_code in (None, 0), f"{where}: re-run exit {outcome.rerun_code}"
    assert outcome.problems_after_rerun == [], f"{where}: {outcome.problems_after_rerun}"
    assert outcome.digests == reference, f"{where}: result differs from an uninterrupted run"


def _trial(crash, name: str, **kill) -> Outcome:  # type: ignore[no-untyped-def]
    step = crash["steps"][name]
    work = crash["root"] / "work"
    work.mkdir(exist_ok=True)
    outcome = kill_trial(step, crash["templates"][name], work, rerun=_rerun, **kill)
    _assert_recovered(outcome, crash["reference"][name], f"{name} {kill}")
    return outcome


# ----- default suite: a few kill points per step --------------------------------------------
@pytest.mark.parametrize(
    ("name", "point"),
    [
        ("ingest", "publish:2"),  # sequences.parquet written, not yet renamed in staging
        ("embed", "progress:3"),  # mid-set: some shards done
        ("embed", "published:2"),  # a shard marker just published
        ("train", "progress:2"),  # mid-training, run directory not published
    ],
)
def test_kill_and_resume(crash, name, point):
    outcome = _trial(crash, name, kill_at=point)
    assert outcome.killed
    if name == "train":  # killed after its first epoch: the re-run went on from there
        assert "runs/.resume/kd" in outcome.leftovers_after_kill
        doc = json.loads((crash["root"] / "work" / "trial-train/runs/kd/run.json").read_text())
        assert doc["resumed"] == [{"phase": "fit", "epoch": 1}]


def test_killed_ingest_leaves_no_store_content_and_check_cleans(crash, cli):
    step = crash["steps"]["ingest"]
    work = crash["root"] / "work"
    store = fresh_copy(crash["templates"]["ingest"], work / "clean-ingest")
    assert run_step(step, store, kill_at="published:2").returncode == -9
    # Staging is a leftover, not a store object: check passes and notes it; --clean removes it.
    result = cli("check", store)
    assert result.exit_code == 0 and "note: leftover" in result.stderr
    assert not (store / "core").exists()
    result = cli("check", store, "--clean")
    assert result.exit_code == 0 and "note: removed: core.tmp-" in result.stderr
    assert sorted(p.name for p in store.iterdir()) == [".locks", "manifest.json"]


def test_killed_teach_leftover_head_is_noted_and_replaced(crash, cli):
    step = crash["steps"]["teach"]
    work = crash["root"] / "work"
    store = fresh_copy(crash["templates"]["teach"], work / "head-teach")
    assert run_step(step, store, kill_at="published:1").returncode == -9
    result = cli("check", store)
    assert result.exit_code == 0
    assert "note: leftover of a killed or running command" in result.stderr
    assert "kmer4.mmseqs.head.safetensors" in result.stderr
    assert cli("info", store).exit_code == 0
    assert _rerun(step, store) == 0
    assert "note:" not in cli("check", store).stderr
    assert _teach_result(store) == crash["reference"]["teach"]


@pytest.mark.parametrize("point", ["publish:1", "publish:2", "published:2"])
def test_killed_teach_overwrite_never_pairs_a_head_with_another_table(crash, cli, point):
    """publish:2 used to leave the new head next to the old table, loaded without a word.

    Now the set is the old pair, the new pair or absent (its head a leftover), and
    readers check the head against the sha256 the table records.
    """
    import tdstore
    from tdstore.errors import IncompleteError
    from tdstore.teacher import soft_labels as SL

    work = crash["root"] / "work"
    store = fresh_copy(crash["templates"]["train"], work / "overwrite-teach")
    old = SL.file_sha256(store / "soft_labels" / "kmer4.mmseqs.head.safetensors")
    teach = crash["steps"]["teach"]
    again = Step("teach", [*teach.argv[:-1], "2", "--overwrite"], compare=teach.compare)
    assert again.argv[-3:] == ["--seed", "2", "--overwrite"]  # another head than the old one
    assert run_step(again, store, kill_at=point).returncode == -9
    handle = tdstore.open(store)
    if SL.table_path(handle, "kmer4.mmseqs").exists():
        recorded = SL.load_metadata(handle, "kmer4.mmseqs")["head_sha256"]
        head = SL.head_path(handle, "kmer4.mmseqs")
        assert SL.file_sha256(head) == recorded
        SL.load_teacher_head(handle, "kmer4.mmseqs")
    else:
        with pytest.raises(IncompleteError, match="run `tdstore teach`"):
            SL.load_teacher_head(handle, "kmer4.mmseqs")
    result = cli("check", store, "--deep")
    assert result.exit_code == 0, result.stderr
    assert _rerun(again, store) == 0
    result = cli("check", store, "--deep")  # a killed writer's *.tmp-* may remain (a note)
    assert result.exit_code == 0 and "problem" not in result.stderr, result.stderr
    new = SL.file_sha256(store / "soft_labels" / "kmer4.mmseqs.head.safetensors")
    assert new != old and SL.load_metadata(handle, "kmer4.mmseqs")["head_sha256"] == new


# ----- slow: >= 20 kill points per step ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ingest", "embed", "teach", "train"])
def test_kill_anywhere(crash, name):
    """Every traced point (or 16 of them, spread), plus kills at random times."""
    step = crash["steps"][name]
    work = crash["root"] / "work"
    work.mkdir(exist_ok=True)
    points, wall = trace_points(step, crash["templates"][name], work)
    assert step.compare(work / f"trace-{name}") == crash["reference"][name]  # subprocess == here
    chosen = points if len(points) <= 16 else [points[i * len(points) // 16] for i in range(16)]
    killed = 0
    for point in chosen:
        killed += _trial(crash, name, kill_at=point.n).killed
    # Timed kills land anywhere, including inside zarr/parquet writes between points.
    rng = random.Random(f"crash-{name}")
    span = points[-1].seconds - points[0].seconds if points else wall
    tries = 0
    while killed < 20 + len(chosen) // 4 and tries < 60:
        tries += 1
        killed += _trial(crash, name, kill_after=rng.uniform(0, span)).killed
    assert killed >= 20, f"{name}: only {killed} kills landed"


def test_zarr_partial_chunk_is_a_leftover(crash, cli):
    """Zarr writes a chunk as <key>.<uuid>.partial then renames it: a kill can leave one."""
    store = fresh_copy(crash["templates"]["teach"], crash["root"] / "work" / "partial")
    chunk = next(p for p in (store / "embeddings/kmer4.zarr/vectors/c").rglob("*") if p.is_file())
    partial = chunk.with_suffix(f".{'ab' * 16}.partial")
    partial.write_bytes(chunk.read_bytes()[:10])
    result = cli("check", store, "--deep")
    assert (
        result.exit_code == 0 and "note: leftover" in result.stderr and ".partial" in result.stderr
    )
    assert cli("check", store, "--clean").exit_code == 0
    assert not partial.exists() and chunk.exists()
