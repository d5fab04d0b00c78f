"""Write the frozen back-compat store ``store-v<N>/`` (run only with a schema version bump).

    .venv/bin/python tests/data/archives/make_archive.py 1     # -> tests/data/archives/store-v1

A tiny simulated metagenome through the real CLI: ingest, two label sets, a k-mer
embedding set, teach, a subset, a 2-epoch student (through the library: the CLI has no
--hidden and the default 512-wide network alone is 3 MB) and evaluate. Keep it under 300 KB.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cli(*args: object) -> None:
    from tdstore.cli.main import main

    code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"tdstore {' '.join(map(str, args))}: exit {code}")


def build(target: Path) -> None:
    import tdstore
    from tdstore.simulate import simulate
    from tdstore.student.fit import FitConfig
    from tdstore.student.train import TrainRequest, train

    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate(
            Path(tmp) / "sim",
            n_contigs=48,
            seed=2024,
            n_species=6,
            n_samples=2,
            min_length=1000,
            genome_min=8_000,
            genome_max=16_000,
        )
        store = target
        cli(
            "ingest",
            store,
            "--fasta",
            sim["fasta_path"],
            "--abundance",
            sim["abundance_path"],
            "--min-length",
            1000,
        )
        cli("labels", "import", store, "mmseqs", sim["labels_path"], "-f", "taxometer")
        cli("labels", "import", store, "gold", sim["gold_path"], "-f", "taxometer")
        cli("embed", store, "--model", "kmer:4", "--n-shards", 2)
        cli(
            "teach",
            store,
            "--embeddings",
            "kmer4",
            "--labels",
            "mmseqs",
            "--folds",
            2,
            "--epochs",
            3,
        )
        cli("subset", "create", store, "long", "--where", "length >= 1500")
        fit = FitConfig(epochs=2, batch_size=32, hidden=32, layers=2, patience=None, seed=1)
        request = TrainRequest(labels="mmseqs", soft_labels="kmer4.mmseqs", name="kd", fit=fit)
        train(tdstore.open(store), request, progress=False, argv=["make_archive.py"])
        cli("evaluate", store, "kd", "--gold", "gold", "--labels", "mmseqs")
    shutil.rmtree(store / ".locks", ignore_errors=True)


if __name__ == "__main__":
    version = int(sys.argv[1])
    target = HERE / f"store-v{version}"
    if target.exists():
        raise SystemExit(f"{target} exists: archives are frozen; bump the version instead")
    build(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target} ({size / 1024:.0f} KB)")
