"""The Snakemake workflow in pipelines/ runs end to end on a small simulated set.

It only calls the tdstore CLI, so this proves the CLI contract the workflow (and
users' SLURM jobs) rely on: shard jobs into one store, the sweep, the summary.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tdstore.pipelines
import yaml

SNAKEFILE = Path(tdstore.pipelines.__file__).parent / "Snakefile"


def _snakemake() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return str(exe)
    found = shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed (pip install '.[dev]')")
    return found


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from tdstore.simulate import simulate

    out = tmp_path_factory.mktemp("pipeline-data")
    simulate(out, n_contigs=400, seed=3, n_species=12, genome_min=40_000, genome_max=80_000)
    return out


def _config(data: Path, workdir: Path, model: str) -> Path:
    config = yaml.safe_load((SNAKEFILE.parent / "config.yaml").read_text())
    config.update(
        outdir=str(workdir / "results"),
        name="sim",
        fasta=str(data / "contigs.fna.gz"),
        abundance=str(data / "abundance.tsv"),
        epochs=2,
        alpha=[0.5],
        temperature=[2.0],
    )
    config["labels"].update(file=str(data / "mmseqs2_lca.tsv"), format="mmseqs2")
    config["gold"].update(file=str(data / "gold.tsv"), format="taxometer")
    config["teacher"].update(model=model, shards=2, device="cpu")
    config["teach"].update(folds=2)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake_run(
    configfile: Path, workdir: Path, *targets: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["TDSTORE_QUIET"] = "1"
    return subprocess.run(
        [
            _snakemake(),
            *targets,  # first: --quiet takes any number of values
            "-s",
            str(SNAKEFILE),
            "--configfile",
            str(configfile),
            "--cores",
            "2",
            "--directory",
            str(workdir),
            "--quiet",
            "all",  # --quiet's choice (all messages), not a target
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _run_workflow(data: Path, workdir: Path, model: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = _config(data, workdir, model)
    result = _snakemake_run(configfile, workdir)  # the default target: rule all
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir / "results"


def _check_results(results: Path) -> None:
    rows = list(csv.DictReader((results / "summary.tsv").open(), delimiter="\t"))
    sources = {r["source"] for r in rows}
    assert {"plain", "kd-all-a0.5-T2.0", "kd-confident-a0.5-T2.0", "labels:mmseqs2"} <= sources
    assert {r["rank"] for r in rows} >= {"genus", "species"}
    for run in ("plain", "kd-all-a0.5-T2.0", "kd-confident-a0.5-T2.0"):
        lines = (results / "predictions" / f"{run}.taxometer.tsv").read_text().splitlines()
        assert lines[0] == "contigs\tpredictions\tscores"
        assert len(lines) > 300
    status = (results / "embed" / "teacher.status.txt").read_text()
    assert "pending" not in status.lower() or "pending shards: none" in status.lower()


def test_workflow_with_kmer_teacher(simulated, tmp_path):
    _check_results(_run_workflow(simulated, tmp_path, "kmer:4"))


def test_workflow_with_tiny_transformer_teacher(simulated, tmp_path):
    from tdstore.teacher.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-genomeocean", max_position_embeddings=128)
    results = _run_workflow(simulated, tmp_path / "work", str(model))
    _check_results(results)
    import tdstore
    from tdstore.teacher.embed_store import status

    state = status(tdstore.open(results / "sim.tdstore"), "teacher")
    assert state["pending"] == [] and len(state["workers"]) == 2


def test_partial_embed_shard_job_fails_and_reruns(simulated, tmp_path):
    """A shard skipped because another process holds its lock: its job fails, no .done."""
    import tdstore
    from tdstore.teacher.embed_store import shard_lock_key

    configfile = _config(simulated, tmp_path, "kmer:4")
    results = tmp_path / "results"
    ingest = _snakemake_run(configfile, tmp_path, str(results / "sim.tdstore/core/core.json"))
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    status = results / "embed" / "teacher.status.txt"
    done = [results / "embed" / f"teacher.shard{i}of2.done" for i in range(2)]
    store = tdstore.open(results / "sim.tdstore")
    with store.lock(shard_lock_key("teacher", 1)):  # "another process" computes shard 1
        partial = _snakemake_run(configfile, tmp_path, str(status), extra=("--keep-going",))
    assert partial.returncode != 0
    assert done[0].exists() and not done[1].exists() and not status.exists()
    log = (results / "logs" / "embed.shard1.log").read_text()
    assert "worker 1/2 has 1 shard(s) unfinished (1)" in log
    again = _snakemake_run(configfile, tmp_path, str(status))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert all(d.exists() for d in done) and "2/2 shards done" in status.read_text()


SBATCH = SNAKEFILE.parent / "embed_array.sbatch"


def _sbatch_task(store: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The #SBATCH lines are comments to bash: the script runs as one array task would.
    base = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "TDSTORE_QUIET": "1"}
    return subprocess.run(
        ["bash", str(SBATCH), str(store), "kmer:4", "k4"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sbatch_stepped_array_with_tdstore_env(simulated, tmp_path):
    """--array=0-4:2 is 3 tasks (IDs 0, 2, 4): every shard computed, via TDSTORE_ENV."""
    import tdstore
    from tdstore.teacher.embed_store import status

    store = tmp_path / "s.tdstore"
    ingest = subprocess.run(
        [
            str(Path(sys.executable).parent / "tdstore"),
            "ingest",
            str(store),
            "--fasta",
            str(simulated / "contigs.fna.gz"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TDSTORE_QUIET="1"),
    )
    assert ingest.returncode == 0, ingest.stderr
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "activate").exists()
    array = {
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "4",
        "SLURM_ARRAY_TASK_STEP": "2",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "TDSTORE_ENV": str(venv),
        "TDSTORE_DEVICE": "cpu",
    }
    for task in ("4", "0", "2"):
        result = _sbatch_task(store, {**array, "SLURM_ARRAY_TASK_ID": task})
        assert result.returncode == 0, result.stdout + result.stderr
    state = status(tdstore.open(store), "k4")
    assert state["pending"] == [] and state["workers"] == ["0/3", "1/3", "2/3"]


def test_sbatch_without_tdstore_says_so(tmp_path):
    result = _sbatch_task(tmp_path / "s.tdstore", {"SLURM_ARRAY_TASK_ID": "0"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: tdstore not found on PATH; set TDSTORE_ENV")
    assert result.stderr.count("\n") == 1
