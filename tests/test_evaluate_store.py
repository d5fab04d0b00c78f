"""Evaluation from a store: label sets and runs against gold, groups, stored metrics, plots, CLI.

The store is written table by table here (not through ingest) so these tests pin
evaluation alone; every file is real Parquet with its declared schema.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from tdstore.schemas import declarations as S

import tdstore
from tdstore.atomic import write_json_atomic
from tdstore.errors import ConflictError, IncompleteError, UsageError
from tdstore.evaluate import evaluate, novel_species_errors, read_metrics, run_evaluation
from tdstore.store import refhash_of
from tdstore.tables import read_table, write_table
from tdstore.taxonomy import Taxonomy, parse_lineage

BASE = "d__Bac;p__P;c__C;o__O;f__F"
LINEAGES = {
    "sA": f"{BASE};g__gA;s__sA",
    "sB": f"{BASE};g__gA;s__sB",  # the novel species: absent from the label source
    "gA": f"{BASE};g__gA",
    "sC": f"{BASE};g__gC;s__sC",
}
IDS = ["S1C1", "S1C2", "S1C3", "S2C1", "S2C2", "S2C3"]


def _taxonomy() -> tuple[Taxonomy, dict[str, int]]:
    tax = Taxonomy.empty()
    ids = {k: tax.add_lineage(parse_lineage(v, where="t"), where="t") for k, v in LINEAGES.items()}
    return tax, ids


def write_labels(store, name, rows, taxa, novel=None):
    _, ids = _taxonomy()
    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "contig_id": [IDS[r] for r in rows],
            "taxon_id": pa.array([ids[t] for t in taxa], pa.int64()),
            "novel": pa.array(novel if novel is not None else [None] * len(rows), pa.bool_()),
        }
    )
    write_table(store.label_path(name), S.LABELS, table, refhash=store.refhash)


def write_predictions(store, run, calls, refhash=None):
    """calls: row -> (taxon key, per-rank scores for its lineage)."""
    tax, ids = _taxonomy()
    rows = sorted(calls)
    lineages = [tax.lineage_ids(ids[calls[r][0]]) for r in rows]
    scores = [calls[r][1] for r in rows]
    assert all(len(a) == len(b) for a, b in zip(lineages, scores, strict=True))
    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "contig_id": [IDS[r] for r in rows],
            "taxon_id": pa.array([ids[calls[r][0]] for r in rows], pa.int64()),
            "lineage_ids": pa.array(lineages, pa.list_(pa.int64())),
            "lineage_scores": pa.array(scores, pa.list_(pa.float32())),
            "raw_scores": pa.array(scores, pa.list_(pa.float32())),
        }
    )
    path = store.named_path("runs", run) / "predictions.parquet"
    write_table(path, S.PREDICTIONS, table, refhash=refhash or store.refhash)


@pytest.fixture
def store(tmp_path):
    store = tdstore.init(tmp_path / "eval.tdstore")
    contigs = pa.table(
        {
            "row": pa.array([0, 1, 2, None, 3, 4, 5], pa.int64()),
            "contig_id": ["S1C1", "S1C2", "S1C3", "S1C9", "S2C1", "S2C2", "S2C3"],
            "sample": ["S1", "S1", "S1", "S1", "S2", "S2", "S2"],
            "length": pa.array([5000, 5000, 5000, 10, 5000, 5000, 5000], pa.int64()),
            "gc": pa.array([0.5] * 7, pa.float32()),
            "n_count": pa.array([0] * 7, pa.int64()),
            "seq_md5": ["x"] * 7,
            "kept": [True, True, True, False, True, True, True],
        }
    )
    (store.path / "core").mkdir()
    write_table(store.path / "core/contigs.parquet", S.CONTIGS, contigs)
    core = {
        "refhash": refhash_of(IDS),
        "n_contigs": 6,
        "n_filtered": 1,
        "min_length": 100,
        "samples": ["S1", "S2"],
    }
    write_json_atomic(store.path / "core/core.json", S.CORE.stamp(core))
    store = tdstore.open(store.path)
    tax, _ = _taxonomy()
    store.write_taxonomy(tax)
    # Gold: rows 0-4 (row 5 absent); row 4's gold stops at the genus; rows 2-3 are novel.
    write_labels(
        store, "truth", [0, 1, 2, 3, 4], ["sA", "sA", "sB", "sB", "gA"],
        novel=[False, False, True, True, False],
    )  # fmt: skip
    write_labels(store, "noisy", [0, 1, 2, 3, 4, 5], ["sA", "gA", "sA", "gA", "sA", "sC"])
    full = [1.0, 1.0, 1.0, 1.0, 1.0]
    write_predictions(
        store,
        "kd",
        {
            0: ("sA", full + [0.99, 0.95]),
            1: ("sA", full + [0.99, 0.92]),
            2: ("sA", full + [0.9, 0.6]),  # novel: species below the threshold
            3: ("sA", full + [0.9, 0.85]),  # novel: a confident wrong species
            4: ("gA", full + [0.97]),
            5: ("sC", full + [0.9, 0.9]),  # no gold: ignored
        },
    )
    return store


def _row(table, source, group, rank):
    rows = [
        r
        for r in table.to_pylist()
        if (r["source"], r["group"], r["rank"]) == (source, group, rank)
    ]
    assert len(rows) == 1, (source, group, rank)
    return rows[0]


def test_label_set_and_run_side_by_side(store):
    table = evaluate(store, gold="truth", runs=["kd"], label_sets=["noisy"])
    noisy = _row(table, "labels:noisy", "all", "species")
    assert noisy["n_contigs"] == 5 and noisy["n_gold"] == 4
    assert (noisy["correct"], noisy["wrong"], noisy["unassigned"], noisy["overcalled"]) == (
        1, 1, 2, 1,
    )  # fmt: skip
    assert noisy["precision"] == 0.5 and noisy["recall"] == 0.25
    assert noisy["f1"] == pytest.approx(1 / 3)
    genus = _row(table, "labels:noisy", "all", "genus")
    assert (genus["n_gold"], genus["correct"], genus["f1"]) == (5, 5, 1.0)
    kd = _row(table, "kd", "all", "species")
    assert (kd["correct"], kd["wrong"], kd["unassigned"], kd["overcalled"]) == (2, 1, 1, 0)
    assert kd["f1"] == pytest.approx(4 / 7)
    assert kd["threshold"] == pytest.approx(0.8)
    assert {r["gold"] for r in table.to_pylist()} == {"truth"}


def test_groups_samples_known_novel(store):
    table = evaluate(store, gold="truth", label_sets=["noisy"], save=False)
    groups = {r["group"] for r in table.to_pylist()}
    assert groups == {"all", "sample:S1", "sample:S2", "known", "novel"}
    s1 = _row(table, "labels:noisy", "sample:S1", "species")
    assert (s1["correct"], s1["wrong"], s1["unassigned"]) == (1, 1, 1)
    assert s1["f1"] == pytest.approx(0.4)
    s2 = _row(table, "labels:noisy", "sample:S2", "species")
    assert math.isnan(s2["precision"]) and s2["f1"] == 0.0 and s2["overcalled"] == 1
    known = _row(table, "labels:noisy", "known", "species")
    assert (known["n_contigs"], known["n_gold"], known["correct"]) == (3, 2, 1)
    assert known["f1"] == pytest.approx(2 / 3)
    novel = _row(table, "labels:noisy", "novel", "species")
    assert (novel["n_contigs"], novel["wrong"], novel["unassigned"]) == (2, 1, 1)
    assert novel_species_errors(table) == {
        "labels:noisy": {"novel_contigs": 2, "wrong_species": 1, "rate": 0.5}
    }


def test_no_known_novel_without_novel_column(store):
    table = evaluate(store, gold="noisy", label_sets=["noisy"], save=False)
    assert {r["group"] for r in table.to_pylist()} == {"all", "sample:S1", "sample:S2"}
    # A label set against itself: perfect wherever it has a lineage.
    assert _row(table, "labels:noisy", "all", "species")["f1"] == 1.0


def test_metrics_stored_and_merged(store):
    evaluate(store, gold="truth", runs=["kd"], label_sets=["noisy"])
    evaluate(store, gold="truth", runs=["kd"], threshold=0.5)
    evaluate(store, gold="noisy", runs=["kd"])
    evaluate(store, gold="truth", runs=["kd"])  # same gold and threshold: replaced, not added
    path = store.path / "runs/kd/metrics.parquet"
    table, meta = read_table(path, S.METRICS)
    assert meta["tdstore.refhash"] == store.refhash
    keys = {(r["gold"], round(r["threshold"], 3)) for r in table.to_pylist()}
    assert keys == {("truth", 0.8), ("truth", 0.5), ("noisy", 0.8)}
    per_key = 5 * 7  # groups all, S1, S2, known, novel x 7 ranks
    assert sum(1 for r in table.to_pylist() if r["gold"] == "truth") == 2 * per_key
    at_half = [
        r
        for r in table.to_pylist()
        if (r["gold"], r["group"], r["rank"]) == ("truth", "all", "species")
        and r["threshold"] == pytest.approx(0.5)
    ]
    assert at_half[0]["wrong"] == 2  # row 2's 0.6 is a call at 0.5
    labels_file = store.path / "metrics/labels-noisy.parquet"
    assert read_metrics(store, label_set="noisy").num_rows == per_key
    assert labels_file.exists()
    assert read_metrics(store, run="kd").num_rows == table.num_rows
    assert not list(store.path.rglob("*.tmp-*"))


def test_run_listing_shows_the_latest_evaluation_only(store):
    from tdstore.student.runs import headline_metrics, load_metrics

    evaluate(store, gold="truth", runs=["kd"])
    assert headline_metrics(load_metrics(store, "kd"))["f1_species"] == pytest.approx(
        4 / 7, abs=1e-4
    )
    evaluate(store, gold="noisy", runs=["kd"])
    # Against 'noisy' (no novel column): its own F1, and no known/novel figures of 'truth'.
    latest = headline_metrics(load_metrics(store, "kd"))
    noisy = _row(evaluate(store, gold="noisy", runs=["kd"], save=False), "kd", "all", "species")
    assert latest["gold"] == "noisy" and latest["f1_species"] == round(noisy["f1"], 4)
    assert "known_species_f1" not in latest and "novel_species_wrong" not in latest


def test_plots_written_with_their_numbers(store, tmp_path):
    report = run_evaluation(
        store, gold="truth", runs=["kd"], label_sets=["noisy"], plots=tmp_path / "plots"
    )
    names = sorted(p.name for p in report.plots)
    assert names == ["f1_by_rank.png", "reliability.png", "threshold_sweep.png"]
    for png in report.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".tsv").exists()

    def tsv(name):
        with open(tmp_path / "plots" / name) as handle:
            return list(csv.DictReader(handle, delimiter="\t"))

    f1 = {(r["source"], r["rank"]): r for r in tsv("f1_by_rank.tsv")}
    assert float(f1[("kd", "species")]["f1"]) == pytest.approx(4 / 7, abs=1e-5)
    assert f1[("labels:noisy", "species")]["wrong"] == "1"
    sweep = {(r["source"], r["rank"], r["threshold"]): r for r in tsv("threshold_sweep.tsv")}
    assert (
        sweep[("kd", "species", "0.5")]["correct"],
        sweep[("kd", "species", "0.5")]["wrong"],
    ) == (
        "2",
        "2",
    )
    assert sweep[("kd", "species", "0.9")]["correct"] == "2"  # 0.95 and 0.92
    assert sweep[("kd", "species", "0.99")]["precision"] == "nan"
    assert len([r for r in tsv("threshold_sweep.tsv") if r["source"] == "kd"]) == 2 * 50
    rel = [r for r in tsv("reliability.tsv") if (r["source"], r["rank"]) == ("kd", "species")]
    by_bin = {r["bin_low"]: r for r in rel}
    assert by_bin["0.9"]["n"] == "2" and by_bin["0.9"]["accuracy"] == "1"
    assert by_bin["0.8"]["n"] == "1" and by_bin["0.8"]["accuracy"] == "0"
    assert by_bin["0.6"]["accuracy"] == "0"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("a-file", "exists and is not a directory"),
        ("a-file/plots", "a-file is not a directory"),
        ("STORE/plots", "inside the store"),
        ("link-to-store/runs/kd", "inside the store"),
        ("/proc/plots", "cannot create files in /proc"),
    ],
)
def test_plots_path_checked_before_any_work(store, cli, tmp_path, target, message):
    if target.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    (tmp_path / "a-file").write_text("keep me\n")
    (tmp_path / "link-to-store").symlink_to(store.path)
    plots = (
        str(store.path) + target[len("STORE") :]
        if target.startswith("STORE")
        else target
        if target.startswith("/")
        else tmp_path / target
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = cli("evaluate", store.path, "kd", "--gold", "truth", "--plots", plots)
    assert result.exit_code == UsageError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --plots "), result.stderr
    assert message in lines[0], lines[0]
    # Refused before evaluating: no metrics stored, no plot, the file untouched.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a-file").read_text() == "keep me\n"


def test_errors(store):
    with pytest.raises(UsageError):
        evaluate(store, gold="truth")
    with pytest.raises(IncompleteError, match="no run 'nope'"):
        evaluate(store, gold="truth", runs=["nope"])
    with pytest.raises(IncompleteError, match="no label set"):
        evaluate(store, gold="missing", runs=["kd"])
    with pytest.raises(UsageError):
        evaluate(store, gold="truth", runs=["../kd"])
    write_predictions(store, "old", {0: ("sA", [1.0] * 7)}, refhash="0" * 64)
    with pytest.raises(ConflictError):
        evaluate(store, gold="truth", runs=["old"])


def test_cli_table_and_json(store, cli):
    result = cli("evaluate", store.path, "kd", "--labels", "noisy", "--gold", "truth")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[lines.index("# gold truth: 5 contigs, score > 0.8") + 1].split("\t")
    assert header[:4] == ["rank", "labels:noisy P", "labels:noisy R", "labels:noisy F1"]
    species = next(line for line in lines if line.startswith("species\t")).split("\t")
    assert species[1:] == ["0.500", "0.250", "0.333", "0.667", "0.500", "0.571"]
    assert "kd\t1.000\t1.000\t1/2 = 0.500" in result.stdout
    assert (store.path / "runs/kd/metrics.parquet").exists()

    result = cli("evaluate", store.path, "kd", "--gold", "truth", "--threshold", "0.5", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["novel_wrong_species"]["kd"] == {
        "novel_contigs": 2,
        "wrong_species": 2,
        "rate": 1.0,
    }
    assert {m["source"] for m in payload["metrics"]} == {"kd"}

    assert cli("evaluate", store.path, "--gold", "truth").exit_code == 2
    missing = cli("evaluate", store.path, "nope", "--gold", "truth")
    assert missing.exit_code == 4 and missing.stderr.startswith("error: ")
    assert cli("evaluate", store.path, "kd", "--gold", "truth", "--threshold", "1").exit_code == 2


def test_simulated_labels_agree_with_the_simulator(tmp_path, monkeypatch, cli):
    """Through ingest and label import: evaluate's counts equal the simulator's own."""
    from tdstore.ingest.core import ingest
    from tdstore.labels import import_labels
    from tdstore.simulate import FILES, simulate

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    sim = tmp_path / "sim"
    result = simulate(
        sim, n_contigs=300, seed=5, n_species=12, genome_min=20_000, genome_max=40_000
    )
    store = tdstore.init(tmp_path / "sim.tdstore")
    ingest(store, sim / FILES["fasta"], abundance=sim / FILES["abundance"], show_progress=False)
    import_labels(store, "mmseqs", sim / FILES["mmseqs2"], format="mmseqs2")
    import_labels(store, "gold", sim / FILES["gold"], format="taxometer")
    table = evaluate(store, gold="gold", label_sets=["mmseqs"])
    quality = result["summary"]["label_quality"]
    for rank in ("genus", "species"):
        for group in ("all", "known", "novel"):
            expected = quality[rank][group]
            if expected["contigs"] == 0:
                continue
            row = _row(table, "labels:mmseqs", group, rank)
            assert row["n_gold"] == expected["contigs"]
            assert (row["correct"], row["wrong"]) == (expected["correct"], expected["wrong"])
            assert row["f1"] == pytest.approx(expected["f1"], abs=1e-4)
    samples = {r["group"] for r in table.to_pylist() if r["group"].startswith("sample:")}
    assert len(samples) == result["samples"]
    out = cli("evaluate", store.path, "--labels", "mmseqs", "--gold", "gold")
    assert out.exit_code == 0, out.stderr
    assert "wrong species calls / novel contigs" in out.stdout
