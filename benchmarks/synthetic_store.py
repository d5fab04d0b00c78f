"""A synthetic store of any size, written with the real writers (no FASTA, no model).

Real formats, made-up content: core/ (contigs, TNF and abundance arrays, core.json with
normalisation statistics), a GTDB-shaped taxonomy, two noisy label sets, teacher soft labels,
finished runs with metrics. For benchmarks of everything downstream of ingest::

    store = make_synthetic_store(Path("/tmp/bench.tdstore"), n=10_000_000)
    python benchmarks/synthetic_store.py /tmp/bench.tdstore --contigs 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from tdstore.schemas import declarations as S

import tdstore
from tdstore.atomic import write_json_atomic
from tdstore.features.normalise import NormalisationStats
from tdstore.store import Store
from tdstore.tables import TableWriter, chunk_rows, write_table
from tdstore.taxonomy import RANK_LETTERS, RANKS, Taxonomy

# Taxa per rank, roughly GTDB's shape at a tenth of its size.
TREE = (2, 60, 150, 500, 1500, 6000, 20000)
BATCH = 1_000_000
MARKER = "synthetic.json"


def make_taxonomy(rng: np.random.Generator) -> tuple[Taxonomy, np.ndarray]:
    """A tree with ``TREE`` taxa per rank; returns it and the species ids."""
    names, ranks, parents = ["root"], ["root"], [-1]
    level_ids = np.array([0])
    for depth, count in enumerate(TREE):
        # Every parent gets at least one child, the rest are spread at random.
        parent_of = np.concatenate(
            [level_ids, rng.choice(level_ids, count - level_ids.size, replace=True)]
        )[:count]
        first = len(names)
        letter, rank = RANK_LETTERS[depth], RANKS[depth]
        names += [f"{letter}__{rank.capitalize()}{i}" for i in range(count)]
        ranks += [rank] * count
        parents += parent_of.tolist()
        level_ids = np.arange(first, first + count)
    return Taxonomy(names, ranks, parents), level_ids


def _truncate(taxonomy: Taxonomy, species: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Ancestor of each species at ``depth`` (1..7), 0 (unclassified) where depth is 0."""
    matrix = taxonomy.rank_matrix(species)
    out = matrix[np.arange(species.size), np.clip(depth, 1, 7) - 1]
    return np.where(depth == 0, 0, out)


def _noisy(rng, taxonomy, truth, species_ids, wrong: float, depths: list[float]) -> np.ndarray:
    """A label set: some species swapped, lineages cut at a random depth."""
    n = truth.size
    species = np.where(rng.random(n) < wrong, rng.choice(species_ids, n), truth)
    depth = rng.choice(8, n, p=np.asarray(depths) / np.sum(depths))
    return _truncate(taxonomy, species, depth)


def _list_array(values: np.ndarray, lengths: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type_.value_type))


def make_synthetic_store(
    path: Path, n: int, *, samples: int = 10, runs: int = 24, seed: int = 0, log=print
) -> Store:
    """Write a store of ``n`` kept contigs at ``path`` (reused if already made alike)."""
    params = {"n": n, "samples": samples, "runs": runs, "seed": seed, "version": 1}
    marker = path / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return tdstore.open(path)
    if path.exists():
        raise SystemExit(f"{path} exists and is not this synthetic store; remove it first")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    store = tdstore.init(path)
    core = store.core_dir
    core.mkdir()
    taxonomy, species_ids = make_taxonomy(rng)
    sample_names = [f"S{i}" for i in range(samples)]
    sample_of = (np.arange(n, dtype=np.int64) * samples // n).astype(np.int64)
    # Abundant species first: a Zipf-like choice of each contig's true species.
    weights = 1.0 / np.arange(1, species_ids.size + 1) ** 0.8
    truth = rng.choice(species_ids, n, p=weights / weights.sum())

    digest = hashlib.sha256()
    ids_all: list[np.ndarray] = []
    with TableWriter(core / "contigs.parquet", S.CONTIGS, metadata={"min_length": 2000}) as out:
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            rows = np.arange(lo, hi, dtype=np.int64)
            ids = [
                f"S{s}C{r}" for s, r in zip(sample_of[lo:hi].tolist(), rows.tolist(), strict=True)
            ]
            digest.update(("\n".join(ids) + "\n").encode())
            ids_array = pa.array(ids, pa.string())
            ids_all.append(ids_array)
            md5 = np.frombuffer(rng.bytes(16 * (hi - lo)), dtype=np.uint8).reshape(-1, 16)
            out.write(
                pa.table(
                    {
                        "row": rows,
                        "contig_id": ids_array,
                        "sample": pa.array(np.asarray(sample_names)[sample_of[lo:hi]]),
                        "length": np.clip(rng.lognormal(8.6, 0.8, hi - lo), 2000, 2e6).astype(
                            np.int64
                        ),
                        "gc": rng.uniform(0.25, 0.75, hi - lo).astype(np.float32),
                        "n_count": np.zeros(hi - lo, dtype=np.int64),
                        "seq_md5": pa.array([bytes(m).hex() for m in md5]),
                        "kept": np.ones(hi - lo, dtype=bool),
                    }
                )
            )
    refhash = digest.hexdigest()
    contig_ids = pa.chunked_array(ids_all)
    log(f"contigs written ({time.perf_counter() - start:.0f} s)")

    stats = _write_features(core, n, samples, sample_names, refhash, rng)
    log(f"features written ({time.perf_counter() - start:.0f} s)")
    write_json_atomic(
        core / "core.json",
        S.CORE.stamp(
            {
                "refhash": refhash,
                "n_contigs": n,
                "n_filtered": 0,
                "n_bases": 0,
                "min_length": 2000,
                "samples": sample_names,
                "contig_samples": sample_names,
                "normalisation": stats.to_dict(),
                "synthetic": True,
            }
        ),
    )
    store = tdstore.open(path)
    store.write_taxonomy(taxonomy)
    rows = pa.array(np.arange(n, dtype=np.int64))
    for name, wrong, depths in (
        ("mmseqs", 0.08, [10, 1, 1, 2, 4, 8, 24, 50]),
        ("metabuli", 0.12, [5, 1, 1, 1, 2, 5, 15, 70]),
    ):
        labels = _noisy(rng, taxonomy, truth, species_ids, wrong, depths)
        table = pa.table(
            {
                "row": rows,
                "contig_id": contig_ids,
                "taxon_id": labels,
                "novel": pa.nulls(n, pa.bool_()),
            }
        )
        write_table(
            store.label_path(name), S.LABELS, table, refhash=refhash, metadata={"synthetic": True}
        )
    log(f"labels written ({time.perf_counter() - start:.0f} s)")
    _write_soft_labels(store, taxonomy, truth, species_ids, rows, contig_ids, refhash, rng)
    log(f"soft labels written ({time.perf_counter() - start:.0f} s)")
    _write_runs(store, runs, sample_names, rng)
    marker.write_text(json.dumps(params))
    log(f"synthetic store of {n:,} contigs ready in {time.perf_counter() - start:.0f} s")
    return store


def _write_features(core, n, samples, sample_names, refhash, rng) -> NormalisationStats:
    import zarr

    group = zarr.open_group(str(core / "features.zarr"), mode="w", zarr_format=3)
    tnf_chunk = chunk_rows(103, 4)
    ab_chunk = chunk_rows(samples, 4)
    tnf = group.create_array("tnf", shape=(n, 103), chunks=(tnf_chunk, 103), dtype="float32")
    ab = group.create_array(
        "abundance", shape=(n, samples), chunks=(ab_chunk, samples), dtype="float32"
    )
    total = np.zeros(103)
    total_sq = np.zeros(103)
    abundance = rng.gamma(0.6, 8.0, size=(n, samples)).astype(np.float32)
    ab[:] = abundance
    step = tnf_chunk * 50
    for lo in range(0, n, step):
        block = rng.standard_normal((min(n, lo + step) - lo, 103), dtype=np.float32) * 0.01
        tnf[lo : lo + block.shape[0]] = block
        total += block.sum(axis=0, dtype=np.float64)
        total_sq += np.square(block, dtype=np.float64).sum(axis=0)
    tnf.attrs.update(S.TNF.attrs(refhash=refhash))
    ab.attrs.update(S.ABUNDANCE.attrs(refhash=refhash, samples=sample_names))
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    # Abundance statistics from the real formula; TNF moments streamed like ingest does.
    from_abundance = NormalisationStats.fit(np.zeros((1, 103)), abundance)
    return NormalisationStats(
        abundance_column_sums=from_abundance.abundance_column_sums,
        tnf_mean=tuple(mean.tolist()),
        tnf_std=tuple(std.tolist()),
        log_total_mean=from_abundance.log_total_mean,
        log_total_std=from_abundance.log_total_std,
    )


def _write_soft_labels(store, taxonomy, truth, species_ids, rows, contig_ids, refhash, rng):
    n, k = truth.size, 3
    top = np.stack(
        [
            np.where(rng.random(n) < 0.9, truth, rng.choice(species_ids, n)),
            *rng.choice(species_ids, (k - 1, n)),
        ],
        axis=1,
    )
    p1 = rng.beta(8, 1.5, n).astype(np.float32)
    p2 = ((1 - p1) * rng.uniform(0.3, 0.8, n)).astype(np.float32)
    p3 = ((1 - p1 - p2) * rng.uniform(0.2, 0.7, n)).astype(np.float32)
    probs = np.stack([p1, p2, p3], axis=1)
    # Node probabilities fall from near 1 at domain to the top leaf's at species; the
    # predicted lineage keeps the nodes above 0.5 (a prefix, as they only decrease).
    node = p1[:, None] + (1 - p1[:, None]) * np.linspace(0.95, 0.0, 7)[None, :]
    depth = (node > 0.5).sum(axis=1)
    lineage = taxonomy.rank_matrix(top[:, 0])
    keep = np.arange(7)[None, :] < depth[:, None]
    deepest = np.where(depth > 0, lineage[np.arange(n), np.maximum(depth, 1) - 1], 0)
    table = pa.table(
        {
            "row": rows,
            "contig_id": contig_ids,
            "leaf_ids": _list_array(top.ravel(), np.full(n, k), pa.list_(pa.int64())),
            "leaf_probs": _list_array(probs.ravel(), np.full(n, k), pa.list_(pa.float32())),
            "rest_mass": (1 - probs.sum(axis=1)).astype(np.float32),
            "lineage_ids": _list_array(lineage[keep], depth, pa.list_(pa.int64())),
            "lineage_probs": _list_array(
                node[keep].astype(np.float32), depth, pa.list_(pa.float32())
            ),
            "taxon_id": deepest,
            "confidence": p1,
            "fold": (np.arange(n) % 5).astype(np.int16),
        }
    )
    write_table(
        store.path / "soft_labels" / "teacher.parquet",
        S.SOFT_LABELS,
        table,
        refhash=refhash,
        metadata={"synthetic": True},
    )


def _write_runs(store, runs, sample_names, rng) -> None:
    groups = ["all", *[f"sample:{s}" for s in sample_names]]
    for i in range(runs):
        name = f"run{i:02d}"
        alpha, temperature = [0.3, 0.5, 0.7, 1.0][i % 4], [1.0, 2.0, 4.0][i % 3]
        folder = store.path / "runs" / name
        folder.mkdir(parents=True)
        config = {
            "labels": "mmseqs",
            "soft_labels": "teacher" if alpha < 1 else None,
            "subset": None,
            "alpha": alpha,
            "temperature": temperature,
            "epochs": 100,
            "seed": i,
        }
        write_json_atomic(
            folder / "run.json",
            S.RUN.stamp(
                {
                    "name": name,
                    "status": "finished",
                    "created": "2026-01-01T00:00:00+00:00",
                    "config": config,
                }
            ),
        )
        write_table(folder / "metrics.parquet", S.METRICS, _metrics(name, groups, rng))
    write_table(
        store.path / "metrics" / "labels-mmseqs.parquet",
        S.METRICS,
        _metrics("labels:mmseqs", groups, rng),
    )


def _metrics(source: str, groups: list[str], rng) -> pa.Table:
    rows = [(g, r) for g in groups for r in RANKS]
    m = len(rows)
    correct = rng.integers(5000, 9000, m)
    wrong = rng.integers(100, 1000, m)
    n_gold = correct + wrong + rng.integers(0, 1000, m)
    precision = correct / (correct + wrong)
    recall = correct / n_gold
    return pa.table(
        {
            "source": [source] * m,
            "gold": ["gold"] * m,
            "group": [g for g, _ in rows],
            "rank": [r for _, r in rows],
            "threshold": pa.array(np.full(m, 0.8), pa.float32()),
            "n_contigs": n_gold,
            "n_gold": n_gold,
            "correct": correct,
            "wrong": wrong,
            "unassigned": n_gold - correct - wrong,
            "overcalled": np.zeros(m, dtype=np.int64),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--contigs", type=int, default=1_000_000)
    args = parser.parse_args()
    make_synthetic_store(args.path, args.contigs)


if __name__ == "__main__":
    main()
