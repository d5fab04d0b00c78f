"""A small hand-made store for the SQL, subset and loading tests (real formats, made-up content).

Kept contigs (row: id, sample): 0 S1C1, 1 S1C2, 2 S1C3, 3 S2C1, 4 S2C2, 5 S2C3, 6 S2C4;
S1C9 is filtered (too short). Taxonomy (hand-made)::

    d__Bacteria
      p__Bacteroidota; c__Bacteroidia; o__Bacteroidales; f__Bacteroidaceae
        g__Bacteroides: s__Bacteroides fragilis, s__Bacteroides uniformis
        g__Phocaeicola: s__Phocaeicola vulgatus
      p__Bacillota; c__Bacilli            (stops at class)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from tdstore.schemas import declarations as S

import tdstore
from tdstore.atomic import write_json_atomic
from tdstore.features.normalise import NormalisationStats
from tdstore.store import Store, refhash_of
from tdstore.tables import write_table
from tdstore.taxonomy import Taxonomy, parse_lineage

BACTEROIDALES = "d__Bacteria;p__Bacteroidota;c__Bacteroidia;o__Bacteroidales;f__Bacteroidaceae"
LINEAGES = {
    "fragilis": BACTEROIDALES + ";g__Bacteroides;s__Bacteroides fragilis",
    "uniformis": BACTEROIDALES + ";g__Bacteroides;s__Bacteroides uniformis",
    "vulgatus": BACTEROIDALES + ";g__Phocaeicola;s__Phocaeicola vulgatus",
    "bacilli": "d__Bacteria;p__Bacillota;c__Bacilli",
    "bacteroides": BACTEROIDALES + ";g__Bacteroides",
}
KEPT = ["S1C1", "S1C2", "S1C3", "S2C1", "S2C2", "S2C3", "S2C4"]
# label set -> taxon (key of LINEAGES, None = unclassified) per kept row
MMSEQS = ["fragilis", "uniformis", "vulgatus", "bacilli", None, "fragilis", "bacteroides"]
METABULI = ["fragilis", "fragilis", "vulgatus", "bacilli", "bacilli", None, "uniformis"]


def make_store(path: Path, *, chunk: int = 3) -> Store:
    store = tdstore.init(path)
    core = store.core_dir
    core.mkdir()
    ids = KEPT + ["S1C9"]
    rows = list(range(len(KEPT))) + [None]
    contigs = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "contig_id": ids,
            "sample": [i.split("C")[0] for i in ids],
            "length": [5000, 3000, 2500, 12000, 2200, 4000, 8000, 900],
            "gc": pa.array([0.41, 0.5, 0.45, 0.6, 0.38, 0.52, 0.47, 0.3], pa.float32()),
            "n_count": [0, 0, 3, 0, 0, 1, 0, 0],
            "seq_md5": [f"{i:032x}" for i in range(len(ids))],
            "kept": [True] * len(KEPT) + [False],
        }
    )
    refhash = refhash_of(KEPT)
    write_table(core / "contigs.parquet", S.CONTIGS, contigs, metadata={"min_length": 2000})
    rng = np.random.default_rng(7)
    tnf = rng.normal(size=(len(KEPT), 103)).astype(np.float32)
    abundance = rng.gamma(2.0, 3.0, size=(len(KEPT), 2)).astype(np.float32)
    abundance[4] = 0.0  # an all-zero row: normalises to 1/K
    _write_features(core, tnf, abundance, refhash, chunk)
    stats = NormalisationStats.fit(tnf, abundance)
    write_json_atomic(
        core / "core.json",
        S.CORE.stamp(
            {
                "refhash": refhash,
                "n_contigs": len(KEPT),
                "n_filtered": 1,
                "min_length": 2000,
                "samples": ["sampleA", "sampleB"],
                "normalisation": stats.to_dict(),
            }
        ),
    )
    store = tdstore.open(path)
    taxonomy = Taxonomy.empty()
    taxa = {
        k: taxonomy.add_lineage(parse_lineage(v, where=k), where=k) for k, v in LINEAGES.items()
    }
    store.write_taxonomy(taxonomy)
    for name, labels in (("mmseqs", MMSEQS), ("metabuli", METABULI)):
        write_table(
            store.label_path(name),
            S.LABELS,
            pa.table(
                {
                    "row": pa.array(range(len(KEPT)), pa.int64()),
                    "contig_id": KEPT,
                    "taxon_id": [taxa[t] if t else 0 for t in labels],
                    "novel": pa.array([None] * len(KEPT), pa.bool_()),
                }
            ),
            metadata={"format": "taxometer"},
            refhash=refhash,
        )
    _write_soft_labels(store, taxonomy, taxa, refhash)
    _write_runs(store, taxa, refhash)
    return store


def _write_features(core: Path, tnf: np.ndarray, abundance: np.ndarray, refhash: str, chunk: int):
    import zarr

    group = zarr.open_group(str(core / "features.zarr"), mode="w", zarr_format=3)
    for name, data, spec, extra in (
        ("tnf", tnf, S.TNF, {}),
        ("abundance", abundance, S.ABUNDANCE, {"samples": ["sampleA", "sampleB"]}),
    ):
        array = group.create_array(
            name, shape=data.shape, chunks=(chunk, data.shape[1]), dtype="float32"
        )
        array[:] = data
        array.attrs.update(spec.attrs(refhash=refhash, **extra))


def _write_soft_labels(store: Store, taxonomy: Taxonomy, taxa: dict, refhash: str) -> None:
    leaves = [taxa["fragilis"], taxa["uniformis"], taxa["vulgatus"], taxa["bacilli"]]
    probs = np.array(
        [
            [0.95, 0.03, 0.01, 0.01],
            [0.40, 0.55, 0.03, 0.02],
            [0.02, 0.03, 0.90, 0.05],
            [0.01, 0.01, 0.01, 0.97],
            [0.30, 0.30, 0.30, 0.10],
            [0.85, 0.10, 0.03, 0.02],
            [0.45, 0.45, 0.05, 0.05],
        ]
    )
    top = np.argsort(-probs, axis=1)[:, :2]
    deepest = [taxa["fragilis"], taxa["uniformis"], taxa["vulgatus"], taxa["bacilli"], 0]
    deepest += [taxa["fragilis"], taxa["bacteroides"]]
    lineage_ids = [taxonomy.lineage_ids(t) for t in deepest]
    table = pa.table(
        {
            "row": pa.array(range(len(KEPT)), pa.int64()),
            "contig_id": KEPT,
            "leaf_ids": [[leaves[j] for j in r] for r in top],
            "leaf_probs": [[float(probs[i, j]) for j in r] for i, r in enumerate(top)],
            "rest_mass": [float(1 - probs[i, r].sum()) for i, r in enumerate(top)],
            "lineage_ids": lineage_ids,
            "lineage_probs": [
                [0.99] * (len(ids) - 1) + [0.9] if ids else [] for ids in lineage_ids
            ],
            "taxon_id": deepest,
            "confidence": probs.max(axis=1).tolist(),
            "fold": [0, 1, 0, 1, -1, 0, 1],
        }
    )
    write_table(
        store.path / "soft_labels" / "teacher.parquet", S.SOFT_LABELS, table, refhash=refhash
    )


def _write_runs(store: Store, taxa: dict, refhash: str) -> None:
    for name, f1, alpha in (("kd-a03", 0.91, 0.3), ("baseline", 0.74, 1.0)):
        folder = store.path / "runs" / name
        folder.mkdir(parents=True)
        doc = S.RUN.stamp(
            {
                "name": name,
                "status": "finished",
                "created": "2026-01-02T03:04:05+00:00",
                "config": {
                    "labels": "mmseqs",
                    "soft_labels": "teacher",
                    "subset": None,
                    "fit": {"alpha": alpha, "temperature": 4.0, "epochs": 3, "seed": 1},
                    "optimizer": {"lr": 0.001, "clip_norm": None},
                },
            }
        )
        (folder / "run.json").write_text(json.dumps(doc))
        write_table(folder / "metrics.parquet", S.METRICS, _metrics(name, f1))
        write_table(
            folder / "predictions.parquet",
            S.PREDICTIONS,
            pa.table(
                {
                    "row": pa.array(range(2), pa.int64()),
                    "contig_id": KEPT[:2],
                    "taxon_id": [taxa["fragilis"], taxa["bacteroides"]],
                    "lineage_ids": [[1, 2], [1]],
                    "lineage_scores": [[0.9, 0.8], [0.7]],
                    "raw_scores": [[0.95, 0.85], [0.75]],
                }
            ),
            refhash=refhash,
        )
    write_table(
        store.path / "metrics" / "labels-mmseqs.parquet", S.METRICS, _metrics("labels:mmseqs", 0.7)
    )


def _metrics(source: str, f1: float) -> pa.Table:
    ranks = ["genus", "species"]
    return pa.table(
        {
            "source": [source] * 2,
            "gold": ["gold"] * 2,
            "group": ["all"] * 2,
            "rank": ranks,
            "threshold": pa.array([0.8, 0.8], pa.float32()),
            "n_contigs": [7, 7],
            "n_gold": [7, 6],
            "correct": [6, 5],
            "wrong": [1, 1],
            "unassigned": [0, 0],
            "overcalled": [0, 0],
            "precision": [0.9, f1],
            "recall": [0.9, f1],
            "f1": [0.9, f1],
        }
    )
