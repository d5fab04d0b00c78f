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


def _run_workflow(data: Path, workdir: Path, model: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = _config(data, workdir, model)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["TDSTORE_QUIET"] = "1"
    result = subprocess.run(
        [
            _snakemake(),
            "-s",
            str(SNAKEFILE),
            "--configfile",
            str(configfile),
            "--cores",
            "2",
            "--directory",
            str(workdir),
            "--quiet",
            "all",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
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
