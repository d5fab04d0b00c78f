"""Export of a hand-made run: Taxometer's TSV byte for byte, and the CAMI binning layout.

Expected bytes follow vamb 5.0.4 ``PredictedTaxonomy.write_as_tsv``: header
``contigs\\tpredictions\\tscores``; names joined by ``;``; each score
``str(round(float32, 5))``; a contig with no call keeps its line with empty fields.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tdstore.export import cami_lines, taxometer_lines, taxometer_score
from tdstore.taxonomy import Taxonomy


def _taxonomy() -> tuple[Taxonomy, list[int]]:
    tax = Taxonomy.empty()
    species = tax.add_lineage(
        (
            "d__Bacteria",
            "p__Bacteroidota",
            "c__Bacteroidia",
            "o__Bacteroidales",
            "f__Bacteroidaceae",
            "g__Bacteroides",
            "s__Bacteroides fragilis",
        ),
        where="t",
    )
    return tax, tax.lineage_ids(species)


def _table(lineage: list[int]) -> pa.Table:
    f32 = np.float32
    rows = [
        # every node called; rounding to 5 decimals, 1.0 printed as Taxometer prints it
        ("S1C1", lineage, [1.0, 0.9999999, 0.987654321, 0.98765, 0.9, 0.75, 0.500001]),
        # stops where the score is not ABOVE the threshold (0.5 exactly is out)
        ("S1C2", lineage[:4], [0.99, 0.7, 0.5, 0.4]),
        # nothing above the threshold: empty prediction and scores
        ("S2C1", lineage[:2], [0.3, 0.2]),
        # a tiny score that rounds to zero decimals is not reached (below threshold)
        ("S2C2", lineage[:3], [0.123456, 0.0, 0.0]),
    ]
    return pa.table(
        {
            "row": pa.array(np.arange(len(rows), dtype=np.int64)),
            "contig_id": [r[0] for r in rows],
            "taxon_id": pa.array([0] * len(rows), pa.int64()),
            "lineage_ids": pa.array([r[1] for r in rows], pa.list_(pa.int64())),
            "lineage_scores": pa.array(
                [[f32(v) for v in r[2]] for r in rows], pa.list_(pa.float32())
            ),
            "raw_scores": pa.array([[f32(0.99)] * len(r[1]) for r in rows], pa.list_(pa.float32())),
        }
    )


def test_taxometer_tsv_bytes():
    tax, lineage = _taxonomy()
    text = "".join(taxometer_lines(_table(lineage), tax, threshold=0.5))
    names = "d__Bacteria;p__Bacteroidota;c__Bacteroidia;o__Bacteroidales"
    full = names + ";f__Bacteroidaceae;g__Bacteroides;s__Bacteroides fragilis"
    expected = (
        "contigs\tpredictions\tscores\n"
        f"S1C1\t{full}\t1.0;1.0;0.98765;0.98765;0.9;0.75;0.5\n"
        "S1C2\td__Bacteria;p__Bacteroidota\t0.99;0.7\n"
        "S2C1\t\t\n"
        "S2C2\t\t\n"
    )
    assert text == expected


def test_lower_threshold_and_raw_scores():
    tax, lineage = _taxonomy()
    text = "".join(taxometer_lines(_table(lineage), tax, threshold=0.1))
    assert "S2C2\td__Bacteria\t0.12346\n" in text
    assert "S2C1\td__Bacteria;p__Bacteroidota\t0.3;0.2\n" in text
    raw = "".join(taxometer_lines(_table(lineage), tax, threshold=0.95, raw=True))
    assert raw.splitlines()[3] == "S2C1\td__Bacteria;p__Bacteroidota\t0.99;0.99"


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1.0"), (0.123456789, "0.12346"), (0.5, "0.5"), (1.0000001, "1.0"), (-1e-9, "0.0")],
)
def test_score_formatting_matches_taxometer(value, text):
    # vamb clips to [0, 1] then prints str(round(np.float32(p), 5)).
    assert taxometer_score(value) == text


def test_cami_binning_layout():
    tax, lineage = _taxonomy()
    samples = {"S1C1": "S1", "S1C2": "S1", "S2C1": "S2", "S2C2": "S2"}
    text = "".join(cami_lines(_table(lineage), tax, samples, threshold=0.5))
    expected_s1 = (
        "@Version:0.9.1\n"
        "@SampleID:S1\n"
        "\n"
        "@@SEQUENCEID\tTAXID\t_RANK\t_LINEAGE\n"
        "S1C1\ts__Bacteroides fragilis\tspecies\td__Bacteria;p__Bacteroidota;c__Bacteroidia;"
        "o__Bacteroidales;f__Bacteroidaceae;g__Bacteroides;s__Bacteroides fragilis\n"
        "S1C2\tp__Bacteroidota\tphylum\td__Bacteria;p__Bacteroidota\n"
    )
    assert expected_s1 in text
    # S2 has no call at 0.5: unassigned contigs are left out, so no S2 section.
    assert "@SampleID:S2" not in text and "S2C1" not in text
    assert text.startswith("# CAMI taxonomic binning written by tdstore")
