"""Benchmark ``tdstore labels import`` per format, against vamb 5.0.4's taxonomy parsing.

Simulates a metagenome (or reuses one in ``--workdir``), ingests it once, then imports the
simulator's label files, one format at a time, each in its own process with the timer
started after the imports. The peer is what ``vamb taxometer`` does with its
``--taxonomy`` file (``Taxonomy.parse_tax_file`` + ``from_observed``, which includes its
ambiguity check), timed the same way on the same Taxometer TSV::

    python benchmarks/labels.py --contigs 200000 --vamb-python /tmp/vambenv/bin/python

tdstore does more per row than vamb: it normalises every lineage to seven GTDB-style ranks,
builds the store's taxonomy tree, counts, and publishes a Parquet table atomically with
the file's md5. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TDSTORE = str(Path(sys.executable).with_name("tdstore"))

IMPORT_CODE = """
import json, resource, sys, time
import tdstore
from tdstore.labels import import_labels
import pyarrow.parquet, numpy
store, name, path, fmt, taxdump = sys.argv[1:6]
start = time.perf_counter()
summary = import_labels(tdstore.open(store), name, path, format=fmt,
                        taxdump=taxdump or None, overwrite=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": summary["rows"], "matched": summary["matched"],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

VAMB_CODE = """
import json, resource, sys, time
from pathlib import Path
from vamb.taxonomy import Taxonomy
ids = Path(sys.argv[2]).read_text().split()
rows = sum(1 for _ in open(sys.argv[1])) - 1  # data lines of the file (outside the timer)
class Metadata:  # what from_observed reads of vamb's CompositionMetaData
    identifiers = ids
    nseqs = len(ids)
    refhash = b""
start = time.perf_counter()
taxonomy = Taxonomy.from_file(Path(sys.argv[1]), Metadata, True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": rows, "matched": taxonomy.nseqs,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# format -> (simulator file, needs the simulator's taxdump)
FORMATS = {
    "taxometer": ("labels.tsv", False),
    "mmseqs2": ("mmseqs2_lca.tsv", False),
    "kraken2": ("contigs.kraken2", True),
    "metabuli": ("metabuli_classifications.tsv", False),
    "cami": ("gold.binning", True),
}


def _env() -> dict[str, str]:
    return {**os.environ, "TDSTORE_QUIET": "1", "OMP_NUM_THREADS": "1"}


def _run(args: list[str]) -> dict:
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(work: Path, contigs: int, seed: int) -> Path:
    """Simulate and ingest once; later runs reuse both."""
    sim, store = work / "sim", work / "s.tdstore"
    if not (sim / "simulation.json").exists():
        subprocess.run(
            [TDSTORE, "simulate", str(sim), "--contigs", str(contigs), "--seed", str(seed)],
            check=True, env=_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
    if not (store / "core" / "core.json").exists():
        subprocess.run([TDSTORE, "init", str(store)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            [TDSTORE, "ingest", str(store), "--fasta", str(sim / "contigs.fna.gz"),
             "--abundance", str(sim / "abundance.tsv")],
            check=True, env=_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
    ids = work / "kept_ids.txt"
    if not ids.exists():
        sys.path.insert(0, str(ROOT))
        import tdstore

        ids.write_text("\n".join(tdstore.open(store).contig_ids().tolist()) + "\n")
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contigs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-labels"))
    parser.add_argument("--vamb-python", default=None, help="a Python with vamb 5.0.4")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = prepare(args.workdir, args.contigs, args.seed)
    sim = args.workdir / "sim"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    results: dict[str, dict] = {}
    for _ in range(args.repeat):  # alternate the tools; keep each one's fastest run
        for fmt, (file, needs_taxdump) in FORMATS.items():
            taxdump = str(sim / "taxdump") if needs_taxdump else ""
            run = _run(
                [sys.executable, "-c", IMPORT_CODE, str(store), f"bench-{fmt}",
                 str(sim / file), fmt, taxdump]
            )  # fmt: skip
            best = results.get(f"tdstore {fmt}")
            if best is None or run["seconds"] < best["seconds"]:
                results[f"tdstore {fmt}"] = run
        if args.vamb_python:
            run = _run(
                [args.vamb_python, "-c", VAMB_CODE, str(sim / "labels.tsv"),
                 str(args.workdir / "kept_ids.txt")]
            )  # fmt: skip
            best = results.get("vamb taxometer TSV")
            if best is None or run["seconds"] < best["seconds"]:
                results["vamb taxometer TSV"] = run
    subprocess.run(
        [TDSTORE, "drop", str(store), "labels", *(f"bench-{f}" for f in FORMATS)],
        check=True, env=_env(), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"{'':<24} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13}")
    for name, run in results.items():
        rate = run["rows"] / run["seconds"]
        print(
            f"{name:<24} {run['rows']:>9,} {run['seconds']:>8.2f} {rate:>10,.0f} "
            f"{run['peak_rss_mib']:>13,.0f}"
        )
    if "vamb taxometer TSV" in results:
        ratio = results["vamb taxometer TSV"]["seconds"] / results["tdstore taxometer"]["seconds"]
        print(f"tdstore taxometer vs vamb on the same file: {ratio:.2f}x vamb's speed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
