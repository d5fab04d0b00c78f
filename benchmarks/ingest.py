"""Benchmark ``tdstore ingest`` against vamb 5.0.4's own TNF + abundance parsing.

Generates (or takes) a contig set and a vamb abundance TSV, ingests it into a fresh store
in a subprocess, and, given a Python with vamb installed, times vamb on the same files::

    python benchmarks/ingest.py --contigs 200000 --vamb-python /tmp/vambenv/bin/python
    python benchmarks/ingest.py --fasta contigs.fna.gz --abundance abundance.tsv

Not part of CI. Peak memory is each subprocess's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ACGT = np.frombuffer(b"ACGT", dtype=np.uint8)

TDSTORE_CODE = """
import json, resource, sys, time
from pathlib import Path
import tdstore
from tdstore.ingest.core import ingest
# Timers start after imports, for both tools (vamb's own import pulls in torch).
import needletail, pyarrow.compute, pyarrow.csv, pyarrow.parquet, zarr
fasta, tsv, store_dir, min_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
usage0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage0.ru_utime + usage0.ru_stime
start = time.perf_counter()
store = tdstore.init(store_dir)
summary = ingest(store, fasta, abundance=tsv or None, min_length=min_length, show_progress=False)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_seconds = lambda: usage.ru_utime + usage.ru_stime - cpu0
size = sum(p.stat().st_size for p in Path(store_dir).rglob("*") if p.is_file())
print(json.dumps({
    "seconds": seconds,
    "contigs": summary["contigs"],
    "bases": summary["bases"],
    "cpu_seconds": cpu_seconds(),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "store_mib": size / 2**20,
}))
"""

TNF_ONLY_CODE = """
import json, resource, sys, time
from tdstore.features.tnf import project, single_threaded_blas
from tdstore.ingest.abundance import read_abundance
from tdstore.ingest.fasta import read_fasta_batches
import needletail, pyarrow.csv
fasta, tsv, min_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
usage0 = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
contigs = bases = 0
with single_threaded_blas():  # as ingest runs it
    for batch in read_fasta_batches(fasta):
        kept = batch.lengths >= min_length
        project(batch.tetramers[kept])
        contigs += int(kept.sum())
        bases += int(batch.lengths[kept].sum())
if tsv:
    read_abundance(tsv)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "cpu_seconds": usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime,
    "contigs": contigs,
    "bases": bases,
    "peak_rss_mib": usage.ru_maxrss / 1024,
}))
"""

VAMB_CODE = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
import vamb
fasta, tsv, min_length, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
usage0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage0.ru_utime + usage0.ru_stime
start = time.perf_counter()
with vamb.vambtools.Reader(fasta) as handle:
    composition = vamb.parsecontigs.Composition.from_file(handle, fasta, minlength=min_length)
tnf_seconds = time.perf_counter() - start
abundance_seconds = 0.0
if tsv:
    start_ab = time.perf_counter()
    abundance = vamb.parsebam.Abundance.from_tsv(Path(tsv), composition.metadata)
    abundance_seconds = time.perf_counter() - start_ab
usage = resource.getrusage(resource.RUSAGE_SELF)
np.save(out, composition.matrix[:2000])
print(json.dumps({
    "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
    "seconds": tnf_seconds + abundance_seconds,
    "tnf_seconds": tnf_seconds,
    "abundance_seconds": abundance_seconds,
    "contigs": int(composition.nseqs),
    "bases": int(composition.metadata.lengths.sum()),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def contig_lengths(rng: np.random.Generator, n: int, min_length: int) -> np.ndarray:
    """A long-tailed length distribution: min_length + lognormal, mean about 7.5 kbp."""
    extra = rng.lognormal(mean=np.log(5500) - 0.5, sigma=1.0, size=n)
    return (min_length + np.minimum(extra, 2_000_000)).astype(np.int64)


def generate(
    workdir: Path,
    n_contigs: int,
    *,
    n_samples: int,
    seed: int,
    min_length: int,
    short_fraction: float,
    line_width: int,
) -> tuple[Path, Path]:
    """Random contigs (vamb-style ids S{n}C{m}) with a few N runs, plus an abundance TSV.

    Contigs shorter than ``min_length`` are mixed in (``short_fraction`` of the total)
    so the filter does work; the TSV lists every contig in FASTA order, as vamb needs.
    """
    rng = np.random.default_rng(seed)
    n_short = int(n_contigs * short_fraction)
    lengths = contig_lengths(rng, n_contigs, min_length)
    short = rng.integers(500, min_length, size=n_short)
    lengths = np.concatenate([lengths, short])[rng.permutation(n_contigs + n_short)]
    fasta, tsv = workdir / "contigs.fna", workdir / "abundance.tsv"
    samples = [f"sample{i + 1}" for i in range(n_samples)]
    with open(fasta, "wb") as out, open(tsv, "w") as ab:
        ab.write("contigname\t" + "\t".join(samples) + "\n")
        for start in range(0, len(lengths), 2000):
            block = lengths[start : start + 2000]
            codes = _ACGT[rng.integers(0, 4, size=int(block.sum()), dtype=np.uint8)]
            offsets = np.concatenate([[0], np.cumsum(block)])
            for j, length in enumerate(block.tolist()):
                seq = codes[offsets[j] : offsets[j + 1]]
                if rng.random() < 0.05:  # an assembly gap
                    gap = int(rng.integers(0, max(1, length - 100)))
                    seq[gap : gap + 100] = ord("N")
                name = f"S{(start + j) % n_samples + 1}C{start + j}"
                out.write(f">{name} length={length}\n".encode())
                out.write(_wrap(seq, line_width))
                depth = rng.lognormal(1.0, 1.5, size=n_samples)
                ab.write(name + "\t" + "\t".join(f"{d:.4f}" for d in depth) + "\n")
    return fasta, tsv


def _wrap(seq: np.ndarray, width: int) -> bytes:
    if width <= 0 or len(seq) <= width:
        return seq.tobytes() + b"\n"
    cuts = np.arange(width, len(seq), width)
    return np.insert(seq, cuts, ord("\n")).tobytes() + b"\n"


def run_json(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd[:3])} ...\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_tnf(store_dir: Path, vamb_rows: Path) -> float:
    """Max |tdstore TNF rotated into vamb's basis - vamb TNF| over the saved rows."""
    import tdstore
    from tdstore.features.tnf import kernel

    theirs = np.load(vamb_rows).astype(np.float64)
    vamb_kernel = _vamb_kernel(vamb_rows.parent)
    if vamb_kernel is None:
        return float("nan")
    ours = tdstore.open(store_dir).tnf()[: len(theirs)].astype(np.float64)
    rotation = kernel().T @ vamb_kernel  # both orthonormal bases of one subspace
    return float(np.abs(ours @ rotation - theirs).max())


def _vamb_kernel(workdir: Path) -> np.ndarray | None:
    path = workdir / "vamb_kernel.npy"
    return np.load(path).astype(np.float64) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contigs", type=int, default=200_000, help="contigs >= min length")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-length", type=int, default=2000)
    parser.add_argument("--short-fraction", type=float, default=0.1)
    parser.add_argument("--line-width", type=int, default=80, help="0: one line per contig")
    parser.add_argument("--fasta", type=Path, help="use this FASTA instead of generating")
    parser.add_argument("--abundance", type=Path, help="abundance TSV for --fasta")
    parser.add_argument("--workdir", type=Path, help="keep generated files here")
    parser.add_argument("--vamb-python", type=Path, help="a Python with vamb 5.0.4 installed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--generate-only", action="store_true", help="only generate (or reuse) the data set"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool, alternating; the fastest is reported"
    )
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tdstore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.fasta:
            fasta, tsv = args.fasta, args.abundance
        else:
            fasta, tsv = _generated(workdir, args)
        if args.generate_only:
            return 0
        results: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "fasta_mib": fasta.stat().st_size / 2**20,
        }
        store_dir = workdir / "bench.tdstore"
        commands = {
            "tdstore": [sys.executable, "-c", TDSTORE_CODE, str(fasta), str(tsv or "")]
            + [str(store_dir), str(args.min_length)],
            "tdstore_tnf_only": [sys.executable, "-c", TNF_ONLY_CODE, str(fasta), str(tsv or "")]
            + [str(args.min_length)],
        }
        rows = workdir / "vamb_tnf_rows.npy"
        if args.vamb_python:
            subprocess.run(
                [
                    str(args.vamb_python),
                    "-c",
                    "import sys, numpy as np, vamb.parsecontigs as p; np.save(sys.argv[1], p._KERNEL)",
                    str(workdir / "vamb_kernel.npy"),
                ],
                check=True,
                capture_output=True,
            )
            commands["vamb"] = [str(args.vamb_python), "-c", VAMB_CODE, str(fasta)]
            commands["vamb"] += [str(tsv or ""), str(args.min_length), str(rows)]
        # Runs alternate between the tools; each tool's fastest run is reported (the least
        # disturbed by other work on the machine), with every run's time and load average.
        runs: dict[str, list[dict]] = {tool: [] for tool in commands}
        for _ in range(args.repeat):
            for tool, command in commands.items():
                if tool == "tdstore":
                    shutil.rmtree(store_dir, ignore_errors=True)
                load = os.getloadavg()[0]
                run = run_json(command)
                run["load_before"] = load
                runs[tool].append(run)
        for tool, tool_runs in runs.items():
            results[tool] = dict(min(tool_runs, key=lambda r: r["seconds"]))
            results[tool]["runs"] = [
                {
                    "seconds": r["seconds"],
                    "cpu_seconds": r["cpu_seconds"],
                    "load_before": r["load_before"],
                }
                for r in tool_runs
            ]
        if args.vamb_python:
            results["tnf_max_abs_diff_vs_vamb"] = compare_tnf(store_dir, rows)
        _report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _generated(workdir: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Generate the data set, or reuse the one in ``workdir`` made with the same options."""
    params = {
        key: getattr(args, key)
        for key in ("contigs", "samples", "seed", "min_length", "short_fraction", "line_width")
    }
    stamp = workdir / "generated.json"
    fasta, tsv = workdir / "contigs.fna", workdir / "abundance.tsv"
    if stamp.exists() and json.loads(stamp.read_text()) == params and fasta.exists():
        print(f"reusing {fasta}", file=sys.stderr)
        return fasta, tsv
    stamp.unlink(missing_ok=True)
    start = time.perf_counter()
    fasta, tsv = generate(
        workdir,
        args.contigs,
        n_samples=args.samples,
        seed=args.seed,
        min_length=args.min_length,
        short_fraction=args.short_fraction,
        line_width=args.line_width,
    )
    stamp.write_text(json.dumps(params))
    print(f"generated {fasta} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return fasta, tsv


def _report(results: dict) -> None:
    print(f"machine: {results['machine']}; FASTA {results['fasta_mib']:,.0f} MiB")
    for tool in ("tdstore", "tdstore_tnf_only", "vamb"):
        r = results.get(tool)
        if not r:
            continue
        mbps = r["bases"] / r["seconds"] / 1e6
        r["mbp_per_s"], r["contigs_per_s"] = mbps, r["contigs"] / r["seconds"]
        print(
            f"{tool:16} {r['contigs']:>9,} contigs {r['bases'] / 1e6:>8,.0f} Mbp "
            f"{r['seconds']:>7.1f} s (CPU {r['cpu_seconds']:.1f} s) {mbps:>7.1f} Mbp/s "
            f"{r['contigs_per_s']:>8,.0f} contigs/s "
            f"peak RSS {r['peak_rss_mib']:>7,.0f} MiB"
        )
        if "store_mib" in r:
            print(f"{'':16} published store {r['store_mib']:,.0f} MiB")
        if len(r.get("runs", [])) > 1:
            each = ", ".join(
                f"{x['seconds']:.1f} s (load {x['load_before']:.1f})" for x in r["runs"]
            )
            print(f"{'':16} runs: {each}")
    if "vamb" in results:
        ratio = results["tdstore"]["mbp_per_s"] / results["vamb"]["mbp_per_s"]
        results["speed_ratio_tdstore_over_vamb"] = ratio
        print(f"tdstore ingest / vamb speed: {ratio:.2f}x (ingest also stores sequences, md5s)")
        ratio_tnf = results["tdstore_tnf_only"]["mbp_per_s"] / results["vamb"]["mbp_per_s"]
        results["speed_ratio_tnf_only_over_vamb"] = ratio_tnf
        print(f"tdstore parse+TNF+abundance / vamb speed: {ratio_tnf:.2f}x")
        print(f"TNF max |diff| vs vamb (after rotation): {results['tnf_max_abs_diff_vs_vamb']:.2e}")


if __name__ == "__main__":
    raise SystemExit(main())
