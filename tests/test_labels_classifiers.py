"""Label files of the tools users run (Kraken2, Metabuli, Taxometer's output): parsing, taxid
resolution, NCBI homonyms, errors, and the store import."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from _simstore import simulated_store

import tdstore
from tdstore.errors import BadInputError, UsageError
from tdstore.ingest.labels import parse_kraken2, parse_metabuli, read_labels
from tdstore.labels import import_labels, label_vector
from tdstore.taxonomy import parse_lineage

ECOLI = (
    "d__Bacteria",
    "p__Pseudomonadota",
    "c__Gammaproteobacteria",
    "o__Enterobacterales",
    "f__Enterobacteriaceae",
    "g__Escherichia",
    "s__Escherichia coli",
)
NODES = [  # taxid, parent, rank, name
    (1, 1, "no rank", "root"),
    (131567, 1, "no rank", "cellular organisms"),
    (2, 131567, "superkingdom", "Bacteria"),
    (1224, 2, "phylum", "Pseudomonadota"),
    (1236, 1224, "class", "Gammaproteobacteria"),
    (91347, 1236, "order", "Enterobacterales"),
    (543, 91347, "family", "Enterobacteriaceae"),
    (561, 543, "genus", "Escherichia"),
    (562, 561, "species", "Escherichia coli"),
    (83333, 562, "strain", "Escherichia coli K-12"),
    (99, 543, "clade", "an unranked clade"),
]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def taxdump(folder: Path, *, gtdb_names: bool = False) -> Path:
    """A tiny taxdump; ``gtdb_names`` names taxa as gtdb_to_taxdump does (``s__Escherichia coli``)."""
    folder.mkdir()
    nodes, names = [], []
    for taxid, parent, rank, name in NODES:
        nodes.append(f"{taxid}\t|\t{parent}\t|\t{rank}\t|\t\t|\n")
        if gtdb_names and rank in (
            "superkingdom",
            "phylum",
            "class",
            "order",
            "family",
            "genus",
            "species",
        ):
            name = f"{'d' if rank == 'superkingdom' else rank[0]}__{name}"
        names.append(f"{taxid}\t|\t{name}\t|\t\t|\tscientific name\t|\n")
    write(folder / "nodes.dmp", "".join(nodes))
    write(folder / "names.dmp", "".join(names))
    return folder


@pytest.fixture
def dump(tmp_path) -> Path:
    return taxdump(tmp_path / "taxonomy")


# ----- Kraken2 ---------------------------------------------------------------------------
def test_kraken2_taxids_names_and_unclassified(tmp_path, dump):
    path = write(
        tmp_path / "k.kraken2",
        "C\ta\t562\t5000\t562:13 561:4 A:31 0:1\n"
        "U\tb\t0\t3000\t0:2966\n"
        "C\tc\tEscherichia coli K-12 (taxid 83333)\t2100\t83333:2066\n"
        "C\td\t561\t98|94\t561:60 |:| 561:60\n"
        "\n"
        "U\te\tunclassified (taxid 0)\t2000\t0:1966\n",
    )
    records = list(read_labels(path, "kraken2", taxdump=dump))
    assert [(r.contig_id, r.line) for r in records] == [
        ("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 6)
    ]  # fmt: skip
    assert records[0].lineage == records[2].lineage == ECOLI  # strain rolls up to its species
    assert records[1].lineage == records[4].lineage == ()
    assert records[3].lineage == ECOLI[:6]


def test_kraken2_calls_above_every_rank_are_unclassified(tmp_path, dump):
    path = write(
        tmp_path / "k.kraken2",
        "C\ta\t1\t2100\t1:9\nC\tb\t131567\t2100\t131567:9\nC\tc\t99\t2100\t99:9\n",
    )
    # The root and "cellular organisms" name no rank; an unranked clade keeps those above it.
    assert [r.lineage for r in parse_kraken2(path, dump)] == [(), (), ECOLI[:5]]


def test_kraken2_gtdb_taxdump_names_are_not_prefixed_twice(tmp_path):
    gtdb = taxdump(tmp_path / "gtdb", gtdb_names=True)
    path = write(tmp_path / "k.kraken2", "C\ta\t562\t2100\t562:9\n")
    assert next(parse_kraken2(path, gtdb)).lineage == ECOLI


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C\ta\t562\t2100\t562:9\nC\tb\t424242\t2100\t1:1\nC\tc\t424242\t2100\t1:1\n",
         ":2: taxid 424242 is not in"),
        ("C\ta\t562\t2100\n", ":1: expected 5 tab-separated columns of Kraken2 output"),
        ("C\ta\tE. coli\t2100\t1:1\n", ":1: taxid (column 3) must be a number, found 'E. coli'"),
        ("X\ta\t562\t2100\t1:1\n", ":1: column 1 must be C (classified) or U"),
        ("C\t \t562\t2100\t1:1\n", ":1: empty sequence id"),
        ("C\ta\t562\t2100\t1:1\nC\ta\t562\t2100\t1:1\n", ":2: contig 'a' is listed twice"),
        ("#is_classified\tname\ttaxID\n1\ta\t562\n", "use --format metabuli"),
        ("1\tcontig_1\t562\t2100\t0.9\tspecies\t562:10\n", "use --format metabuli"),
        ("  0.50\t10\t10\tS\t562\t    Escherichia coli\n", "a Kraken2 report (--report)"),
        ("\n\n", "no label rows"),
    ],
)  # fmt: skip
def test_kraken2_bad(tmp_path, dump, text, message):
    path = write(tmp_path / "bad.kraken2", text)
    with pytest.raises(BadInputError, match="bad.kraken2") as info:
        list(read_labels(path, "kraken2", taxdump=dump))
    assert message in str(info.value)


def test_kraken2_needs_a_taxdump(tmp_path, dump):
    path = write(tmp_path / "k.kraken2", "C\ta\t562\t2100\t562:9\n")
    with pytest.raises(UsageError, match="--format kraken2 needs --taxdump DIR"):
        list(read_labels(path, "kraken2"))
    with pytest.raises(BadInputError, match="not a directory"):
        list(read_labels(path, "kraken2", taxdump=tmp_path / "nope"))


# ----- Metabuli --------------------------------------------------------------------------
METABULI_LINEAGE = (
    "d_Bacteria;p_Pseudomonadota;c_Gammaproteobacteria;o_Enterobacterales;"
    "f_Enterobacteriaceae;sf_Some subfamily;g_Escherichia;sg_Some subgenus;s_Escherichia coli;"
    "ss_Escherichia coli K-12"
)


def test_metabuli_with_lineage_column_needs_no_taxdump(tmp_path):
    path = write(
        tmp_path / "m_classifications.tsv",
        "#is_classified\tname\ttaxID\tquery_length\tscore\te_value\trank\tlineage\t"
        "taxID:match_count\n"
        f"1\ta\t83333\t5000\t0.93\t1e-30\tsubspecies\t{METABULI_LINEAGE}\t83333:120\n"
        "0\tb\t0\t3000\t0\t-\tno rank\n"
        "1\tc\t561\t2100\t0.81\t0\tgenus\td_Bacteria;p_Pseudomonadota;c_Gammaproteobacteria;"
        "o_Enterobacterales;f_Enterobacteriaceae;g_Escherichia\t561:50\n",
    )
    records = list(read_labels(path, "metabuli"))
    assert [r.contig_id for r in records] == ["a", "b", "c"]
    assert records[0].lineage == ECOLI  # two-letter in-between ranks are skipped
    assert records[1].lineage == ()
    assert records[2].lineage == ECOLI[:6]


def test_metabuli_with_taxdump_in_every_layout(tmp_path, dump):
    layouts = {
        # 1.0: no header, no e-value
        "old": "1\ta\t562\t2100\t0.9\tspecies\t562:10\n0\tb\t0\t2100\t0\tno rank\n",
        # 1.2: header with e_value, no lineage
        "new": "#is_classified\tname\ttaxID\tquery_length\tscore\te_value\trank\t"
        "taxID:match_count\n1\ta\t562\t2100\t0.9\t0\tspecies\t562:10\n0\tb\t0\t2100\t0\t-\tno rank\n",
        # the app's older header name for column 1
        "app": "#query_id\tname\ttaxID\tquery_length\tscore\trank\ttaxID:match_count\n"
        "1\ta\t562\t2100\t0.9\tspecies\t562:10\n0\tb\t0\t2100\t0\t-\t-\n",
    }
    for name, text in layouts.items():
        path = write(tmp_path / f"{name}.tsv", text)
        records = list(read_labels(path, "metabuli", taxdump=dump))
        assert [(r.contig_id, r.lineage) for r in records] == [("a", ECOLI), ("b", ())], name
    gz = tmp_path / "new.tsv.gz"
    gz.write_bytes(gzip.compress(layouts["new"].encode()))
    assert [r.lineage for r in parse_metabuli(gz, dump)] == [ECOLI, ()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\ta\t562\t2100\t0.9\tspecies\t562:10\n", ":1: no lineage column in this Metabuli output"),
        ("#is_classified\tname\ttaxID\tlineage\n1\ta\t562\n", ":2: a classified row without column 4"),
        ("#is_classified\tname\ttaxID\tlineage\n1\ta\t562\t1224;2\n", ":2: the lineage is taxids"),
        ("#name\ttaxID\n", ":1: expected Metabuli's header"),
        ("#is_classified\tname\ttaxID\tlineage\n#is_classified\tname\ttaxID\tlineage\n",
         ":2: a second header line"),
        ("C\ta\t562\t2100\t562:9\n", ":1: column 1 (is_classified) must be 0 or 1, found 'C'; "
         "this looks like Kraken2 output"),
        ("1\ta\n", ":1: expected at least 3 tab-separated columns"),
        ("1\ta\tx\n", ":1: taxID (column 3) must be a number"),
    ],
)  # fmt: skip
def test_metabuli_bad(tmp_path, text, message):
    path = write(tmp_path / "bad_classifications.tsv", text)
    with pytest.raises(BadInputError, match="bad_classifications.tsv") as info:
        list(read_labels(path, "metabuli"))
    assert message in str(info.value)


def test_metabuli_unknown_taxid_names_the_line(tmp_path, dump):
    path = write(
        tmp_path / "m.tsv",
        "1\ta\t562\t2100\t0.9\tspecies\t1:1\n1\tb\t77\t2100\t0.9\tspecies\t1:1\n",
    )
    with pytest.raises(BadInputError, match=r"m.tsv:2: taxID 77 is not in .*nodes.dmp"):
        list(read_labels(path, "metabuli", taxdump=dump))


def test_taxdump_refused_where_unused(tmp_path, dump):
    path = write(tmp_path / "t.tsv", "contigs\tpredictions\na\td__Bacteria\n")
    with pytest.raises(
        UsageError, match="only used with --format cami, kraken2, metabuli, not taxometer"
    ):
        list(read_labels(path, "taxometer", taxdump=dump))


def test_lineage_parsing_of_gtdb_named_metabuli_output():
    assert parse_lineage("d_d__Bacteria;p_p__Bacillota", where="x") == (
        "d__Bacteria",
        "p__Bacillota",
    )
    # Realm and kingdom are not among the seven ranks: skipped.
    assert parse_lineage("d_Viruses;r_Riboviria;k_Orthornavirae;p_Pisuviricota", where="x") == (
        "d__Viruses",
        "p__Pisuviricota",
    )


# ----- the simulator's Kraken2 and Metabuli files import as its MMseqs2 labels ------------
def test_simulated_kraken2_and_metabuli_match_mmseqs2(tmp_path, monkeypatch):
    from tdstore.simulate import FILES

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    store, _ = simulated_store(tmp_path, seed=4, n_contigs=150, n_species=8)
    sim = tmp_path / "sim"
    import_labels(store, "mmseqs", sim / FILES["mmseqs2"], format="mmseqs2")
    dump_dir = sim / FILES["taxdump"]
    kraken = import_labels(
        store, "kraken", sim / FILES["kraken2"], format="kraken2", taxdump=dump_dir
    )
    mb_lineage = import_labels(store, "mbl", sim / FILES["metabuli"], format="metabuli")
    mb_taxdump = import_labels(
        store, "mbt", sim / FILES["metabuli"], format="metabuli", taxdump=dump_dir
    )
    for summary in (kraken, mb_lineage, mb_taxdump):
        assert summary["matched"] == store.n_contigs and summary["taxa_added"] == 0
        assert summary["unclassified"] > 0
    expected = label_vector(store, "mmseqs").tolist()
    for name in ("kraken", "mbl", "mbt"):
        assert label_vector(store, name).tolist() == expected, name
    assert store.labels("kraken")[1]["tool"] == "kraken2"
    assert store.labels("mbt")[1]["format"] == "metabuli"


def test_cli_imports_kraken2_and_metabuli(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    sim, store = tmp_path / "sim", tmp_path / "s.tdstore"
    assert cli("simulate", sim, "--contigs", 120, "--seed", 2, "--species", 6).exit_code == 0
    assert cli("init", store).exit_code == 0
    ingested = cli(
        "ingest", store, "--fasta", sim / "contigs.fna.gz", "--abundance", sim / "abundance.tsv"
    )
    assert ingested.exit_code == 0, ingested.stderr
    kraken = cli(
        "labels", "import", store, "kraken", sim / "contigs.kraken2",
        "--format", "kraken2", "--taxdump", sim / "taxdump",
    )  # fmt: skip
    assert kraken.exit_code == 0, kraken.stderr
    assert "imported label set 'kraken' (kraken2)" in kraken.stdout
    metabuli = cli(
        "labels", "import", store, "metabuli", sim / "metabuli_classifications.tsv",
        "-f", "metabuli",
    )  # fmt: skip
    assert metabuli.exit_code == 0, metabuli.stderr
    listing = cli("labels", "list", store).stdout.splitlines()
    assert [line.split()[:2] for line in listing[1:]] == [
        ["kraken", "kraken2"],
        ["metabuli", "metabuli"],
    ]
    # Kraken2 output without its taxdump: a one-line usage error, nothing written.
    missing = cli("labels", "import", store, "k2", sim / "contigs.kraken2", "-f", "kraken2")
    assert missing.exit_code != 0
    assert "--format kraken2 needs --taxdump DIR" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (store / "labels" / "k2.parquet").exists()


# ----- Taxometer's results TSV, imported to be evaluated ---------------------------------
TAXOMETER_OUT = "contigs\tpredictions\tscores\n"


def test_taxometer_output_with_and_without_a_score_cut(tmp_path):
    path = write(
        tmp_path / "results_taxometer.tsv",
        TAXOMETER_OUT + "a\td__Bacteria;p__Pseudomonadota;c__Gammaproteobacteria\t1.0;0.9;0.6\n"
        "b\t\t\n"
        "c\td__Bacteria;p__Pseudomonadota\t0.8;0.99\n",
    )
    every = list(read_labels(path, "taxometer-output"))
    assert [len(r.lineage) for r in every] == [3, 0, 2]
    cut = list(read_labels(path, "taxometer-output", min_score=0.8))
    # A score must be above the cut, and a lineage stops at its first node that is not.
    assert [r.lineage for r in cut] == [ECOLI[:2], (), ()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contigs\tpredictions\na\td__B\n", ":1: expected Taxometer's result header"),
        (TAXOMETER_OUT + "a\td__B;p__C\t1.0\n", ":2: 2 taxa but 1 scores"),
        (TAXOMETER_OUT + "a\td__B\thigh\n", ":2: score 'high' is not a number"),
        (TAXOMETER_OUT + "a\td__B\t1.5\n", ":2: score 1.5 is outside [0, 1]"),
        (TAXOMETER_OUT + "a\td__B\n", ":2: expected 3 tab-separated columns"),
    ],
)
def test_taxometer_output_bad(tmp_path, text, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(BadInputError, match="bad.tsv") as info:
        list(read_labels(path, "taxometer-output"))
    assert message in str(info.value)


def test_taxometer_output_options_checked(tmp_path):
    path = write(tmp_path / "r.tsv", TAXOMETER_OUT + "a\td__B\t1.0\n")
    with pytest.raises(UsageError, match="--min-score is only used with --format taxometer-output"):
        list(read_labels(path, "taxometer", min_score=0.5))
    with pytest.raises(UsageError, match=r"--min-score must be in \[0, 1\)"):
        list(read_labels(path, "taxometer-output", min_score=1.0))
    # The learning format points at this one when handed Taxometer's output.
    with pytest.raises(BadInputError, match="--format taxometer-output"):
        list(read_labels(path, "taxometer"))


def test_exported_run_imported_back_evaluates_like_the_run(tmp_path, monkeypatch):
    """`export --threshold 0.8` then `labels import --format taxometer-output`: the label
    set's per-rank metrics equal the run's own at evaluate's threshold 0.8, exactly."""
    import torch

    from tdstore.evaluate import evaluate
    from tdstore.export import export_run
    from tdstore.student.fit import FitConfig
    from tdstore.student.train import TrainRequest, train

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    torch.set_num_threads(1)
    store, sim = simulated_store(tmp_path, seed=6)
    import_labels(store, "mmseqs", sim["labels_path"], format="taxometer")
    import_labels(store, "gold", sim["gold_path"], format="taxometer")
    fit = FitConfig(epochs=3, batch_size=64, lr=1e-2, hidden=32, patience=None)
    train(store, TrainRequest(labels="mmseqs", name="plain", fit=fit), progress=False)
    exported = tmp_path / "plain.taxometer.tsv"
    export_run(store, "plain", "taxometer", exported, threshold=0.8)
    import_labels(store, "tx", exported, format="taxometer-output")
    assert store.labels("tx")[1]["tool"] == "taxometer"
    table = evaluate(store, gold="gold", runs=["plain"], label_sets=["tx"], save=False).to_pylist()
    by_source: dict[str, dict] = {}
    for row in table:
        if row["group"] == "all":
            by_source.setdefault(row["source"], {})[row["rank"]] = (
                row["correct"], row["wrong"], row["unassigned"], row["overcalled"]
            )  # fmt: skip
    assert set(by_source) == {"plain", "labels:tx"}
    assert by_source["plain"] == by_source["labels:tx"]
    assert any(counts[0] > 0 for counts in by_source["labels:tx"].values())


# ----- NCBI homonyms -----------------------------------------------------------------------
def test_ncbi_homonyms_are_named_after_their_parent(tmp_path, monkeypatch, cli):
    """NCBI reuses names across kingdoms: a Kraken2 file calling both the bacterial and the
    insect genus Bacillus imports, the second one as 'g__Bacillus (Bacillidae)'."""
    from tdstore.ingest.core import ingest

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    folder = tmp_path / "taxonomy"
    folder.mkdir()
    nodes = [(1, 1, "no rank", "root"), (2, 1, "superkingdom", "Bacteria"),
             (1239, 2, "phylum", "Bacillota"), (91061, 1239, "class", "Bacilli"),
             (1385, 91061, "order", "Bacillales"), (186817, 1385, "family", "Bacillaceae"),
             (1386, 186817, "genus", "Bacillus"), (2759, 1, "superkingdom", "Eukaryota"),
             (6656, 2759, "phylum", "Arthropoda"), (50557, 6656, "class", "Insecta"),
             (7022, 50557, "order", "Phasmida"), (55081, 7022, "family", "Bacillidae"),
             (55087, 55081, "genus", "Bacillus")]  # fmt: skip
    write(folder / "nodes.dmp", "".join(f"{t}\t|\t{p}\t|\t{r}\t|\n" for t, p, r, _ in nodes))
    write(
        folder / "names.dmp",
        "".join(f"{t}\t|\t{n}\t|\t\t|\tscientific name\t|\n" for t, _, _, n in nodes),
    )
    fasta = tmp_path / "c.fna"
    write(fasta, "".join(f">c{i}\n{'ACGTTGCAAG' * 250}\n" for i in range(3)))
    store = tdstore.init(tmp_path / "s.tdstore")
    ingest(store, fasta, show_progress=False)
    kraken = write(
        tmp_path / "k.kraken2",
        "C\tc0\t1386\t2500\t1:1\nC\tc1\t55087\t2500\t1:1\nU\tc2\t0\t2500\t0:1\n",
    )
    result = cli("labels", "import", store.path, "k", kraken, "-f", "kraken2", "--taxdump", folder)
    assert result.exit_code == 0, result.stderr
    assert (
        "note: 1 taxon shares a name" in result.stderr
        and "g__Bacillus (Bacillidae)" in result.stderr
    )
    store = tdstore.open(store.path)
    taxonomy = store.taxonomy()
    table, meta = store.labels("k")
    lineages = [taxonomy.lineage_names(t) for t in table.column("taxon_id").to_pylist()]
    assert lineages[0][-1] == "g__Bacillus" and lineages[0][0] == "d__Bacteria"
    assert lineages[1][-1] == "g__Bacillus (Bacillidae)" and lineages[1][0] == "d__Eukaryota"
    assert meta["counts"]["homonyms"] == 1
    # Importing it again lands on the same taxa; a GTDB-style file with the clash is refused.
    assert (
        cli(
            "labels", "import", store.path, "k2", kraken, "-f", "kraken2", "--taxdump", folder
        ).exit_code
        == 0
    )
    assert (
        store.labels("k2")[0].column("taxon_id").to_pylist() == table.column("taxon_id").to_pylist()
    )
    gtdb = write(tmp_path / "g.tsv", "contigs\tpredictions\nc0\td__Other;p__Bacillota\n")
    refused = cli("labels", "import", store.path, "g", gtdb, "-f", "taxometer")
    assert refused.exit_code == 3 and "has two parents" in refused.stderr


def test_a_clash_below_a_homonym_is_refused_not_copied():
    """A genus moved to another family between taxonomy versions: its species clash again
    below the renamed genus. That is not a homonym, and copying the subtree with nested
    names would silently split one species in two."""
    from tdstore.taxonomy import Taxonomy

    taxonomy, homonyms = Taxonomy.empty(), []
    above = ("d__Bacteria", "p__Bacillota", "c__Bacilli", "o__Bacillales")
    taxonomy.add_lineage(
        (*above, "f__Bacillaceae", "g__Bacillus", "s__Bacillus subtilis"),
        where="a:1",
        homonyms=homonyms,
    )
    with pytest.raises(
        BadInputError, match="below the homonym 'g__Bacillus \\(Anoxybacillaceae\\)'"
    ):
        taxonomy.add_lineage(
            (*above, "f__Anoxybacillaceae", "g__Bacillus", "s__Bacillus subtilis"),
            where="b:1",
            homonyms=homonyms,
        )


def test_domain_written_without_rank_by_older_builds(tmp_path):
    """NCBI's 2025 'domain' rank: builds that only know 'superkingdom' write '-_Bacteria'."""
    path = write(
        tmp_path / "m.tsv",
        "#is_classified\tname\ttaxID\tquery_length\tscore\trank\tlineage\ttaxID:match_count\n"
        "1\ta\t1423\t2100\t0.9\tspecies\t-_cellular organisms;-_Bacteria;k_Bacillati;"
        "p_Bacillota;c_Bacilli;o_Bacillales;f_Bacillaceae;g_Bacillus;s_Bacillus subtilis\t1:1\n"
        "1\tb\t2157\t2100\t0.9\tno rank\t-_cellular organisms;-_Archaea\t1:1\n",
    )
    records = list(read_labels(path, "metabuli"))
    assert records[0].lineage[:2] == ("d__Bacteria", "p__Bacillota")
    assert records[1].lineage == ("d__Archaea",)


def test_taxids_out_of_int64_range_are_one_line_errors(tmp_path, dump):
    path = write(tmp_path / "k.kraken2", "C\ta\t99999999999999999999\t2100\t1:1\n")
    with pytest.raises(
        BadInputError, match=r"k.kraken2:1: taxid \(column 3\) 99999999999999999999 is out of range"
    ):
        list(read_labels(path, "kraken2", taxdump=dump))
    huge = tmp_path / "huge"
    huge.mkdir()
    write(huge / "nodes.dmp", "1\t|\t1\t|\tno rank\t|\n99999999999999999999\t|\t1\t|\tgenus\t|\n")
    write(huge / "names.dmp", "1\t|\troot\t|\t\t|\tscientific name\t|\n")
    from tdstore.ingest.taxdump import TaxDump

    with pytest.raises(
        BadInputError, match=r"nodes.dmp:2: tax_id 99999999999999999999 is out of range"
    ):
        TaxDump.load(huge)


def test_hashed_taxids_of_gtdb_taxdump_load_sparsely(tmp_path):
    """gtdb-taxdump (taxonkit create-taxdump) hashes names into taxids up to 2^31: the dump
    must not be held as arrays as long as the largest taxid."""
    from tdstore.ingest.taxdump import TaxDump

    folder = tmp_path / "gtdb"
    folder.mkdir()
    nodes = [(1, 1, "no rank", "root"), (609216830, 1, "superkingdom", "d__Bacteria"),
             (1838953862, 609216830, "phylum", "p__Bacillota"), (2012345678, 1838953862, "species", "s__X y")]  # fmt: skip
    write(folder / "nodes.dmp", "".join(f"{t}\t|\t{p}\t|\t{r}\t|\n" for t, p, r, _ in nodes))
    write(
        folder / "names.dmp",
        "".join(f"{t}\t|\t{n}\t|\t\t|\tscientific name\t|\n" for t, _, _, n in nodes),
    )
    dump = TaxDump.load(folder)
    assert dump.ids is not None and dump.parent.nbytes < 1000
    assert 1838953862 in dump and 1838953863 not in dump and 0 not in dump
    assert dump.lineages([1838953862]) == {1838953862: ("d__Bacteria", "p__Bacillota")}
    path = write(tmp_path / "k.kraken2", "C\ta\t1838953862\t2100\t1:1\nC\tb\t5\t2100\t1:1\n")
    with pytest.raises(BadInputError, match="k.kraken2:2: taxid 5 is not in"):
        list(read_labels(path, "kraken2", taxdump=folder))
