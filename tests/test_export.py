"""Export of a hand-made run: Taxometer's TSV byte for byte, the CAMI binning layout, --output.

Expected bytes follow vamb 5.0.4 ``PredictedTaxonomy.write_as_tsv``: header
``contigs\\tpredictions\\tscores``; names joined by ``;``; each score
``str(round(float32, 5))``; a contig with no call keeps its line with empty fields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tdstore.errors import UsageError
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
    # bioboxes: the file opens with @Version; TAXID is the store's integer taxon id (a store
    # keeps no NCBI taxids), never a name, whose spaces would break the TAXID column.
    expected_s1 = (
        "@Version:0.9.1\n"
        "@SampleID:S1\n"
        "\n"
        "@@SEQUENCEID\tTAXID\t_RANK\t_LINEAGE\n"
        f"S1C1\t{lineage[6]}\tspecies\td__Bacteria;p__Bacteroidota;c__Bacteroidia;"
        "o__Bacteroidales;f__Bacteroidaceae;g__Bacteroides;s__Bacteroides fragilis\n"
        f"S1C2\t{lineage[1]}\tphylum\td__Bacteria;p__Bacteroidota\n"
    )
    assert text.startswith(expected_s1)
    assert tax.names[lineage[6]] == "s__Bacteroides fragilis"
    # S2 has no call at 0.5: unassigned contigs are left out, so no S2 section.
    assert "@SampleID:S2" not in text and "S2C1" not in text
    assert not any(line.startswith("#") for line in text.splitlines())


# ----- through a store and the CLI ------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    """A store with the contigs of :func:`_table` and a hand-made run ``kd`` (no ingest)."""
    from tdstore.schemas import declarations as S

    import tdstore
    from tdstore.atomic import write_json_atomic
    from tdstore.store import refhash_of
    from tdstore.tables import write_table

    tax, lineage = _taxonomy()
    predictions = _table(lineage)
    ids = predictions.column("contig_id").to_pylist()
    store = tdstore.init(tmp_path / "s.tdstore")
    n = len(ids)
    contigs = pa.table(
        {
            "row": pa.array(range(n), pa.int64()),
            "contig_id": ids,
            "sample": [i[:2] for i in ids],
            "length": pa.array([5000] * n, pa.int64()),
            "gc": pa.array([0.5] * n, pa.float32()),
            "n_count": pa.array([0] * n, pa.int64()),
            "seq_md5": ["x"] * n,
            "kept": [True] * n,
        }
    )
    write_table(store.path / "core" / "contigs.parquet", S.CONTIGS, contigs)
    core = {"refhash": refhash_of(ids), "n_contigs": n, "n_filtered": 0, "min_length": 100}
    write_json_atomic(store.path / "core" / "core.json", S.CORE.stamp({**core, "samples": []}))
    store = tdstore.open(store.path)
    store.write_taxonomy(tax)
    run = store.named_path("runs", "kd") / "predictions.parquet"
    write_table(run, S.PREDICTIONS, predictions, refhash=store.refhash)
    return store


def test_cami_export_writes_store_taxon_ids(store, cli, tmp_path):
    out = tmp_path / "kd.binning"
    result = cli(
        "export", store.path, "kd", "--format", "cami", "--output", out, "--threshold", "0.5"
    )
    assert result.exit_code == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "@Version:0.9.1"
    taxonomy = store.taxonomy()
    rows = [line.split("\t") for line in lines if line.startswith("S")]
    assert [r[0] for r in rows] == ["S1C1", "S1C2"]
    for _, taxid, rank, lineage in rows:
        assert taxid.isdigit(), taxid
        assert taxonomy.ranks[int(taxid)] == rank
        assert ";".join(taxonomy.lineage_names(int(taxid))) == lineage


def _one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("existing-dir", "is a directory"),
        ("a-file/x.tsv", "a-file is not a directory"),
        ("a-file/deeper/x.tsv", "a-file is not a directory"),
        ("STORE/runs/kd/x.tsv", "inside the store"),
        ("STORE/new-dir/x.tsv", "inside the store"),
        ("link-to-runs/x.tsv", "inside the store"),
    ],
)
def test_export_output_checked_before_any_work(store, cli, tmp_path, target, message):
    (tmp_path / "existing-dir").mkdir()
    (tmp_path / "a-file").write_text("keep me\n")
    (tmp_path / "link-to-runs").symlink_to(store.path / "runs")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = (
        str(store.path) + target[len("STORE") :]
        if target.startswith("STORE")
        else tmp_path / target
    )
    for format in ("taxometer", "cami"):
        result = cli("export", store.path, "kd", "--format", format, "--output", out)
        assert result.exit_code == UsageError.exit_code
        line = _one_error_line(result)
        assert "--output" in line and message in line, line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a-file").read_text() == "keep me\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_export_to_an_unwritable_place(store, cli):
    result = cli("export", store.path, "kd", "--format", "cami", "--output", "/proc/x.binning")
    assert result.exit_code == UsageError.exit_code
    assert "cannot create files in /proc" in _one_error_line(result)


def test_export_creates_missing_parent_directories(store, cli, tmp_path):
    out = tmp_path / "new" / "dirs" / "kd.tsv"
    result = cli("export", store.path, "kd", "--format", "taxometer", "--output", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().startswith("contigs\tpredictions\tscores\n")
    assert [p.name for p in out.parent.iterdir()] == ["kd.tsv"]  # no probe or temporary left
