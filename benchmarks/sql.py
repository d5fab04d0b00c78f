"""Benchmark ``tdstore sql`` selections and subset feature loading on a synthetic store.

Times the README's four queries (target < 0.3 s each) in their ``calls`` form and, for
comparison, as joins of the per-table views; single-table selections; the ``calls`` cache
build; a saved subset; and ``load_features`` for 10% and 50% random subsets against the raw
sequential read rate of the same arrays, measured in the same run (target >= 50%)::

    python benchmarks/sql.py --contigs 10000000          # store kept in /tmp for reruns
    python benchmarks/sql.py --contigs 1000000 --repeat 5

Not part of CI. The store is written directly (benchmarks/synthetic_store.py), no FASTA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_synthetic_store  # noqa: E402

# The README's four queries in the form a user should write: one scan of ``calls``.
QUERIES: dict[str, str] = {
    "confident genus-level soft labels in one sample": """
SELECT contig_id, soft_teacher_genus AS genus, soft_teacher_p_genus AS p_genus
FROM calls WHERE sample = 'S3' AND soft_teacher_p_genus >= 0.95
ORDER BY p_genus DESC""",
    "teacher vs MMseqs2 disagreement at family, top 20": """
SELECT contig_id, label_mmseqs_family AS mmseqs, soft_teacher_family AS teacher,
       soft_teacher_confidence AS confidence
FROM calls WHERE label_mmseqs_family <> soft_teacher_family
ORDER BY confidence DESC LIMIT 20""",
    "teacher vs MMseqs2 disagreement at family, every row": """
SELECT contig_id, label_mmseqs_family AS mmseqs, soft_teacher_family AS teacher,
       soft_teacher_confidence AS confidence
FROM calls WHERE label_mmseqs_family <> soft_teacher_family
ORDER BY confidence DESC""",
    "per-rank agreement of two label sets": """
SELECT * FROM rank_agreement('label_mmseqs', 'label_metabuli')""",
    "runs by species F1": """
SELECT r.name, r.alpha, r.temperature, m.precision, m.recall, m.f1
FROM runs r JOIN metrics m ON m.source = r.name
WHERE m.rank = 'species' AND m."group" = 'all'
ORDER BY m.f1 DESC""",
}
# The same questions as joins of the per-table views (the README's form before calls).
JOIN_FORMS: dict[str, str] = {
    "confident genus-level soft labels in one sample": """
SELECT s.contig_id, s.genus, s.lineage_probs[rank_depth('genus')] AS p_genus
FROM soft_labels s JOIN contigs c USING (row)
WHERE s.soft_label_set = 'teacher' AND c.sample = 'S3'
  AND s.lineage_probs[rank_depth('genus')] >= 0.95
ORDER BY p_genus DESC""",
    "teacher vs MMseqs2 disagreement at family, every row": """
SELECT l.contig_id, l.family AS mmseqs_family, s.family AS teacher_family, s.confidence
FROM labels l JOIN soft_labels s USING (row)
WHERE l.label_set = 'mmseqs' AND s.soft_label_set = 'teacher'
  AND l.family <> s.family
ORDER BY s.confidence DESC""",
    "per-rank agreement of two label sets": """
WITH pairs AS (
  SELECT a.taxon_id AS ta, b.taxon_id AS tb, count(*) AS n
  FROM labels a JOIN labels b USING (row)
  WHERE a.label_set = 'mmseqs' AND b.label_set = 'metabuli'
  GROUP BY ALL
), per_rank AS (
  SELECT unnest(['domain', 'phylum', 'class', 'order', 'family', 'genus', 'species']) AS rank,
         unnest([x.domain, x.phylum, x.class, x."order", x.family, x.genus, x.species]) AS a,
         unnest([y.domain, y.phylum, y.class, y."order", y.family, y.genus, y.species]) AS b,
         n
  FROM pairs JOIN lineages x ON x.taxon_id = ta JOIN lineages y ON y.taxon_id = tb
)
SELECT rank, sum(n)::BIGINT AS both_labelled, round(sum(n) FILTER (a = b) / sum(n), 4) AS agreement
FROM per_rank WHERE a IS NOT NULL AND b IS NOT NULL
GROUP BY rank ORDER BY rank_depth(rank)""",
}
# Single-table selections of the kind a subset is made from, on a view and on calls.
SELECTIONS: dict[str, str] = {
    "one genus in one label set (labels view)": """
SELECT row FROM labels WHERE label_set = 'mmseqs' AND genus = 'g__Genus3'""",
    "one genus in one label set (calls)": """
SELECT row FROM calls WHERE label_mmseqs_genus = 'g__Genus3'""",
    "long contigs of one sample (contigs view)": """
SELECT row, contig_id, length FROM contigs WHERE sample = 'S3' AND length >= 10000""",
    "confident teacher calls per family, top 10 (soft_labels view)": """
SELECT family, count(*) AS n FROM soft_labels WHERE confidence >= 0.9 AND family IS NOT NULL
GROUP BY family ORDER BY n DESC LIMIT 10""",
    "confident teacher calls per family, top 10 (calls)": """
SELECT soft_teacher_family AS family, count(*) AS n FROM calls
WHERE soft_teacher_confidence >= 0.9 AND soft_teacher_family IS NOT NULL
GROUP BY ALL ORDER BY n DESC LIMIT 10""",
}
SUBSET_WHERE = "genus IN ('g__Genus1', 'g__Genus2', 'g__Genus3') AND length >= 3000"


def _timed(fn, repeat: int, cpu: list[float] | None = None) -> tuple[list[float], object]:
    """Wall seconds of each run; CPU seconds (all threads of this process) go to ``cpu``."""
    times, result = [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times, result


def bench_cache(store, rebuild: bool) -> dict:
    """Seconds to make the calls cache current (a full build when it is missing or stale)."""
    from tdstore import calls

    if rebuild:
        calls.cache_path(store).unlink(missing_ok=True)
    was_current = calls.is_current(store)
    start, start_cpu = time.perf_counter(), time.process_time()
    ok = calls.refresh(store)
    return {
        "built": not was_current,
        "current": ok,
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - start_cpu,
        "bytes": calls.cache_path(store).stat().st_size if ok else None,
    }


def bench_queries(store, repeat: int, join_repeat: int) -> list[dict]:
    from tdstore import sql as tsql

    tsql.connect(store).close()  # imports and file metadata warm
    start = time.perf_counter()
    con = tsql.connect(store)
    out = [{"what": "connect (build all views)", "seconds": [time.perf_counter() - start]}]
    for name, query in JOIN_FORMS.items():
        cpu: list[float] = []
        times, table = _timed(lambda q=query: tsql.execute(con, q), join_repeat, cpu)
        out.append(
            {"what": name, "kind": "join", "seconds": times, "cpu": cpu, "rows": table.num_rows}
        )
    for kind, queries in (("readme", QUERIES), ("selection", SELECTIONS)):
        for name, query in queries.items():
            cpu: list[float] = []
            times, table = _timed(lambda q=query: tsql.execute(con, q), repeat, cpu)
            out.append(
                {"what": name, "kind": kind, "seconds": times, "cpu": cpu, "rows": table.num_rows}
            )
    con.close()
    return out


def bench_subset(store) -> dict:
    from tdstore import subsets

    start = time.perf_counter()
    result = subsets.create(store, "bench", where=SUBSET_WHERE, labels="mmseqs", overwrite=True)
    create = time.perf_counter() - start
    start = time.perf_counter()
    subsets.load_rows(store, "bench")
    load = time.perf_counter() - start
    return {"create_s": create, "load_rows_s": load, "rows": int(result["n_rows"])}


def raw_read(arrays, block_bytes: int) -> float:
    """Seconds to read the arrays start to end, slices of ``block_bytes`` decoded into one
    reused buffer: the fastest plain sequential read we know, so the baseline is strict."""
    from tdstore.features.load import read_slice

    start = time.perf_counter()
    for array in arrays:
        row_bytes = array.dtype.itemsize * array.shape[1]
        chunk = array.chunks[0]
        step = chunk * max(1, block_bytes // (chunk * row_bytes))
        buffer = np.empty((step, array.shape[1]), dtype=array.dtype)
        for lo in range(0, array.shape[0], step):
            hi = min(lo + step, array.shape[0])
            read_slice(array, lo, hi, buffer[: hi - lo])
    return time.perf_counter() - start


def bench_load(store, repeat: int, seed: int) -> dict:
    from tdstore.features.load import BLOCK_BYTES, load_features

    tnf, abundance = store.tnf(), store.abundance()
    n = store.n_contigs
    row_bytes = 4 * (tnf.shape[1] + abundance.shape[1])
    total_bytes = n * row_bytes
    raw_cpu: list[float] = []
    raw_times, _ = _timed(lambda: raw_read([tnf, abundance], BLOCK_BYTES), repeat, raw_cpu)
    raw = min(raw_times)
    rng = np.random.default_rng(seed)
    result = {
        "arrays_gb": total_bytes / 1e9,
        "raw_read_s": raw_times,
        "raw_read_cpu_s": raw_cpu,
        "raw_gb_per_s": total_bytes / raw / 1e9,
        "tnf_chunk_rows": int(tnf.chunks[0]),
        "abundance_chunk_rows": int(abundance.chunks[0]),
        "subsets": [],
    }
    samples = list(store.samples)
    one_sample = store.sql(f"SELECT row FROM contigs WHERE sample = '{samples[3]}'")
    cases = {
        "random 10%": np.sort(rng.choice(n, n // 10, replace=False)),
        "random 50%": np.sort(rng.choice(n, n // 2, replace=False)),
        "one sample (10%, clustered)": one_sample.column("row").to_numpy(),
    }
    for name, rows in cases.items():
        cpu: list[float] = []
        times, x = _timed(lambda r=rows: load_features(store, r), repeat, cpu)
        best = min(times)
        # Share of the array every touched chunk covers: what has to be read and decoded.
        touched = np.unique(rows // tnf.chunks[0]).size * tnf.chunks[0] / n
        result["subsets"].append(
            {
                "subset": name,
                "rows": int(rows.size),
                "seconds": times,
                "cpu": cpu,
                "touched_fraction": float(min(touched, 1.0)),
                # Bytes of the arrays scanned per second, as a share of the sequential rate.
                "scan_vs_raw": (min(touched, 1.0) * total_bytes / best) / (total_bytes / raw),
                "useful_gb_per_s": rows.size * row_bytes / best / 1e9,
                "shape": list(x.shape),
            }
        )
        del x
    return result


def machine() -> str:
    cpus = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {cpus} CPU cores, {mem:.0f} GiB RAM, load average {load:.1f} "
        f"at start, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark tdstore sql and subset loading.")
    parser.add_argument("--contigs", type=int, default=10_000_000)
    parser.add_argument("--path", type=Path, default=None, help="synthetic store (reused)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query")
    parser.add_argument("--load-repeat", type=int, default=2, help="runs of each load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-load", action="store_true", help="queries only")
    parser.add_argument("--skip-queries", action="store_true", help="loading only")
    parser.add_argument("--join-repeat", type=int, default=1, help="runs of each join form")
    parser.add_argument(
        "--rebuild-cache", action="store_true", help="delete the calls cache and time its build"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    import duckdb
    import zarr

    import tdstore

    path = args.path or Path(f"/tmp/tdstore-bench-sql-{args.contigs}")
    info = {"machine": machine(), "duckdb": duckdb.__version__, "zarr": zarr.__version__}
    start = time.perf_counter()
    store = make_synthetic_store(path, args.contigs, log=lambda m: print(m, file=sys.stderr))
    info["generate_s"] = time.perf_counter() - start
    store = tdstore.open(path)
    info["contigs"] = store.n_contigs
    if not args.skip_queries:
        info["calls_cache"] = bench_cache(store, args.rebuild_cache)
    info["queries"] = (
        [] if args.skip_queries else bench_queries(store, args.repeat, args.join_repeat)
    )
    if not args.skip_queries:
        info["subset"] = bench_subset(store)
    if not args.skip_load:
        info["load"] = bench_load(store, args.load_repeat, args.seed)
    print(json.dumps(info, indent=2))
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    print(f"\n{store.n_contigs:,} contigs; {info['machine']}", file=sys.stderr)
    if "calls_cache" in info:
        c = info["calls_cache"]
        print(
            f"calls cache: built={c['built']} {c['seconds']:.1f} s ({c['cpu']:.1f} CPU-s)",
            file=sys.stderr,
        )
    for q in info["queries"]:
        t, c = q["seconds"], q.get("cpu") or [float("nan")]
        print(
            f"| {q.get('kind', '')} | {q['what']} | {min(t):.3f} | {statistics.median(t):.3f} "
            f"| {min(c):.3f} | {q.get('rows', '')} |",
            file=sys.stderr,
        )
    if "subset" in info:
        print(f"subset create --labels: {info['subset']['create_s']:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
