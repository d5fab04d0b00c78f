"""Label import: each parser on good and bad files, the import into a store, the CLI."""

from __future__ import annotations

import gzip
import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import tdstore
from tdstore.errors import BadInputError, ConflictError, IncompleteError, UsageError
from tdstore.ingest.labels import parse_cami, parse_mmseqs2, parse_taxometer, read_labels
from tdstore.ingest.taxdump import TaxDump
from tdstore.labels import check, import_labels, label_vector, lineage_table

GTDB = "d__Bacteria;p__Pseudomonadota;c__Gammaproteobacteria;o__Enterobacterales;f__Enterobacteriaceae;g__Escherichia;s__Escherichia coli"
MMSEQS = GTDB.replace("__", "_")
KEPT = [f"S1C{i}" for i in range(6)]
SHORT = ["S1C6", "S1C7"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tsv(path: Path, rows: list[str], header: str = "contigs\tpredictions") -> Path:
    return write(path, "\n".join([header, *rows]) + "\n")


# ----- a tiny ingested store, built once and copied per test -------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    from tdstore.ingest.core import ingest

    root = tmp_path_factory.mktemp("template")
    rng = random.Random(7)
    fasta = root / "contigs.fna"
    with fasta.open("w") as handle:
        for cid in KEPT + SHORT:
            length = 2100 if cid in KEPT else 300
            handle.write(f">{cid} x\n{''.join(rng.choice('ACGT') for _ in range(length))}\n")
    store = tdstore.init(root / "s.tdstore")
    ingest(store, fasta, min_length=2000, show_progress=False)
    return store.path


@pytest.fixture
def store(template, tmp_path, monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")
    shutil.copytree(template, tmp_path / "s.tdstore")
    return tdstore.open(tmp_path / "s.tdstore")


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----- a tiny NCBI taxdump ------------------------------------------------------------
NODES = [  # taxid, parent, rank
    (1, 1, "no rank"),
    (131567, 1, "no rank"),
    (2, 131567, "superkingdom"),
    (1224, 2, "phylum"),
    (1236, 1224, "class"),
    (91347, 1236, "order"),
    (543, 91347, "family"),
    (561, 543, "genus"),
    (562, 561, "species"),
    (83333, 562, "strain"),
    (2157, 131567, "domain"),  # newer dumps say domain
    (28890, 2157, "phylum"),
    (9001, 28890, "order"),  # no class in between: a placeholder fills it
    (9002, 9001, "clade"),
    (9003, 9002, "family"),
]
NAMES = {
    1: "root",
    131567: "cellular organisms",
    2: "Bacteria",
    1224: "Pseudomonadota",
    1236: "Gammaproteobacteria",
    91347: "Enterobacterales",
    543: "Enterobacteriaceae",
    561: "Escherichia",
    562: "Escherichia coli",
    83333: "Escherichia coli K-12",
    2157: "Archaea",
    28890: "Methanobacteriota",
    9001: "Methanobacteriales",
    9002: "some clade",
    9003: "Methanobacteriaceae",
}


@pytest.fixture
def taxdump(tmp_path) -> Path:
    folder = tmp_path / "taxdump"
    folder.mkdir()
    write(
        folder / "nodes.dmp",
        "".join(f"{t}\t|\t{p}\t|\t{r}\t|\tXX\t|\t0\t|\n" for t, p, r in NODES),
    )
    names = []
    for taxid, name in NAMES.items():
        names.append(f"{taxid}\t|\t{name} synonym\t|\t\t|\tsynonym\t|\n")
        names.append(f"{taxid}\t|\t{name}\t|\t\t|\tscientific name\t|\n")
    write(folder / "names.dmp", "".join(names))
    return folder


def cami(path: Path, rows: list[str], columns: str = "SEQUENCEID\tBINID\tTAXID\t_LENGTH") -> Path:
    head = ["# gold standard", "@Version:0.9.1", "@SampleID:S1", "", f"@@{columns}"]
    return write(path, "\n".join(head + rows) + "\n")


# ----- Taxometer TSV ------------------------------------------------------------------
def test_taxometer_good(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(
        b"contigs\tpredictions\r\n"
        b"a\t" + GTDB.encode() + b"\r\n"
        b"b\t\r\n"
        b"c\r\n"  # unclassified whose tab was lost
        b"d\tBacteria;Pseudomonadota\r\n"  # bare names, stops early
        b"\r\n"
    )
    records = list(parse_taxometer(path))
    assert [r.contig_id for r in records] == ["a", "b", "c", "d"]
    assert records[0].lineage == tuple(GTDB.split(";"))
    assert records[1].lineage == records[2].lineage == ()
    assert records[3].lineage == ("d__Bacteria", "p__Pseudomonadota")
    assert [r.line for r in records] == [2, 3, 4, 5]


def test_taxometer_gold_novel_column_and_gzip(tmp_path):
    path = tmp_path / "gold.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(
            f"contigs\tpredictions\tnovel\na\t{GTDB}\ttrue\nb\td__Bacteria\tfalse\nc\t\t\n"
        )
    records = list(read_labels(path, "taxometer"))
    assert [r.novel for r in records] == [True, False, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("contig\tlineage\na\td__B\n", "expected the header"),
        ("contigs\tpredictions\tscores\na\td__B\t0.9\n", "Taxometer OUTPUT"),
        (f"a\t110\tgenus\tX\t{MMSEQS}\n", "use --format mmseqs2"),
        ("contigs\tpredictions\na\td__B\textra\n", ":2: expected 2 tab-separated columns"),
        ("contigs\tpredictions\na\td__B;c__C\n", ":2: skipped rank in lineage 'd__B;c__C'"),
        ("contigs\tpredictions\na\td__B;;c__C\n", ":2: skipped rank"),
        ("contigs\tpredictions\tnovel\na\td__B\tmaybe\n", ":2: novel must be true or false"),
        ("contigs\tpredictions\n\ta\n", ":2: empty contig id"),
        ("contigs\tpredictions\na\td__B\nb\td__B\na\td__C\n", ":4: contig 'a' is listed twice"),
        ("contigs\tpredictions\n", "no label rows"),
    ],
)
def test_taxometer_bad(tmp_path, text, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(BadInputError, match="bad.tsv") as info:
        list(read_labels(path, "taxometer"))
    assert message in str(info.value)


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "x.tsv"
    binary.write_bytes(b"contigs\tpredictions\n\xff\xfe\x00\n")
    with pytest.raises(BadInputError, match="x.tsv:2: not UTF-8"):
        list(read_labels(binary, "taxometer"))
    with pytest.raises(BadInputError, match="no such file"):
        list(read_labels(tmp_path / "nope.tsv", "taxometer"))
    with pytest.raises(UsageError, match="unknown label format"):
        list(read_labels(binary, "kraken"))


# ----- MMseqs2 ------------------------------------------------------------------------
def test_mmseqs2_nucleotide_and_protein_columns(tmp_path):
    path = write(
        tmp_path / "lca.tsv",
        f"S4C1445\t110\tgenus\tCupriavidus\td_Bacteria;p_Proteobacteria;c_Gammaproteobacteria;o_Burkholderiales;f_Burkholderiaceae;g_Cupriavidus\n"
        "S5C879\t0\tno rank\tunclassified\t\n"
        "S5C880\t0\tno rank\tunclassified\n"  # trailing tab lost
        f"S5C881\t562\tspecies\tEscherichia coli\t12\t10\t9\t0.9\t-_cellular organisms;{MMSEQS}\n"
        "S5C882\t2\tsuperkingdom\tBacteria\t3\t3\t3\t1.0\t-_cellular organisms;d_Bacteria;k_Bacillati\n",
    )
    records = list(parse_mmseqs2(path))
    assert records[0].lineage[-1] == "g__Cupriavidus" and len(records[0].lineage) == 6
    assert records[1].lineage == records[2].lineage == ()
    assert records[3].lineage == tuple(GTDB.split(";"))
    assert records[4].lineage == ("d__Bacteria",)


def test_mmseqs2_single_and_double_underscore_agree(tmp_path):
    one = write(tmp_path / "one.tsv", f"a\t562\tspecies\tE. coli\t{MMSEQS}\n")
    two = write(tmp_path / "two.tsv", f"a\t562\tspecies\tE. coli\t{GTDB}\n")
    assert list(parse_mmseqs2(one))[0].lineage == list(parse_mmseqs2(two))[0].lineage


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\t110\tgenus\td_B\n", ":1: expected 5 (nucleotide) or 9 (protein/ORF)"),
        ("a\t110\tgenus\tX\t1\t2\td_B\n", ":1: expected 5"),
        ("a\tx\tgenus\tX\td_B\n", ":1: taxid (column 2) must be a number"),
        ("contigs\tpredictions\na\td__B\n", ":1: this is a Taxometer TSV"),
        ("a\t110\tgenus\tX\t2;1224;1236\n", "--tax-lineage 1"),
        ("a\t110\tgenus\tX\td_B;;c_C\n", ":1: skipped rank in lineage 'd_B;;c_C'"),
        (
            "a\t0\tno rank\tunclassified\t\n\nb\t1\tno rank\tx\t\na\t0\tno rank\tu\t\n",
            ":4: contig 'a'",
        ),
        ("", "no label rows"),
    ],
)
def test_mmseqs2_bad(tmp_path, text, message):
    path = write(tmp_path / "bad_lca.tsv", text)
    with pytest.raises(BadInputError, match="bad_lca.tsv") as info:
        list(read_labels(path, "mmseqs2"))
    assert message in str(info.value)


def test_mmseqs2_ncbi_lineage_gaps_filled_as_the_cami_importer_does(tmp_path):
    """NCBI lineages lack ranks (a candidate phylum without class, order, family)."""
    lineage = (
        "-_cellular organisms;d_Bacteria;-_Candidatus Saccharibacteria group;"
        "p_Candidatus Saccharibacteria;g_Candidatus Saccharimonas"
    )
    path = write(tmp_path / "lca.tsv", f"c1\t1234\tgenus\tCandidatus Saccharimonas\t{lineage}\n")
    (record,) = list(read_labels(path, "mmseqs2"))
    phylum = "Candidatus Saccharibacteria"
    assert record.lineage == (
        "d__Bacteria",
        f"p__{phylum}",
        f"c__{phylum} (no class)",
        f"o__{phylum} (no order)",
        f"f__{phylum} (no family)",
        "g__Candidatus Saccharimonas",
    )
    # Taxometer TSVs (GTDB names) have every rank: a gap there is still an error.
    path = write(tmp_path / "t.tsv", "contigs\tpredictions\nc1\td__B;c__C\n")
    with pytest.raises(BadInputError, match="skipped rank"):
        list(read_labels(path, "taxometer"))


# ----- CAMI gold standard + NCBI taxdump -----------------------------------------------
def test_taxdump_lineages(taxdump):
    dump = TaxDump.load(taxdump)
    lineages = dump.lineages([562, 83333, 561, 9003, 2157, 131567])
    assert lineages[562] == tuple(GTDB.split(";"))
    assert lineages[83333] == lineages[562]  # a strain is labelled at its species
    assert lineages[561] == tuple(GTDB.split(";")[:6])
    assert lineages[9003] == (
        "d__Archaea",
        "p__Methanobacteriota",
        "c__Methanobacteriota (no class)",
        "o__Methanobacteriales",
        "f__Methanobacteriaceae",
    )
    assert lineages[2157] == ("d__Archaea",)
    assert lineages[131567] == ()
    assert dump.missing([562, 5, 10**9]) == [5, 10**9]


def test_taxdump_bad(tmp_path, taxdump):
    with pytest.raises(BadInputError, match="not a directory"):
        TaxDump.load(tmp_path / "none")
    (taxdump / "nodes.dmp").write_text("1\t|\t1\t|\tno rank\t|\nabc\t|\n")
    with pytest.raises(BadInputError, match="nodes.dmp:2: not a dump line"):
        TaxDump.load(taxdump)
    (taxdump / "nodes.dmp").write_text("1\t|\t1\t|\tno rank\t|\n\nx2\t|\t1\t|\tgenus\t|\n")
    with pytest.raises(BadInputError, match="nodes.dmp:3: tax_id 'x2' is not a number"):
        TaxDump.load(taxdump)
    (taxdump / "nodes.dmp").write_text("")
    with pytest.raises(BadInputError, match="nodes.dmp: empty"):
        TaxDump.load(taxdump)
    (taxdump / "nodes.dmp").write_text("1\t|\t1\t|\tno rank\t|\n7\t|\t1\t|\tgenus\t|\n")
    with pytest.raises(BadInputError, match="no scientific name for taxid 7"):
        TaxDump.load(taxdump).lineages([7])
    (taxdump / "nodes.dmp").write_text(
        "1\t|\t1\t|\tno rank\t|\n5\t|\t6\t|\tgenus\t|\n6\t|\t5\t|\tfamily\t|\n"
    )
    with pytest.raises(BadInputError, match="cycle"):
        TaxDump.load(taxdump).lineages([5])


def test_taxdump_minimal_crlf_fields(tmp_path):
    """Only three nodes.dmp fields (the rank keeps the line's '\\t|'), CRLF, a blank line."""
    folder = tmp_path / "td"
    folder.mkdir()
    (folder / "nodes.dmp").write_bytes(
        b"1\t|\t1\t|\tno rank\t|\r\n\r\n2\t|\t1\t|\tsuperkingdom\t|\r\n3\t|\t2\t|\tphylum\t|\r\n"
    )
    (folder / "names.dmp").write_bytes(
        b"2\t|\tBacteria\t|\t\t|\tscientific name\t|\r\n3\t|\tBacillota\t|\t\t|\tscientific name\t|\r\n"
    )
    assert TaxDump.load(folder).lineages([3]) == {3: ("d__Bacteria", "p__Bacillota")}


def test_cami_good(tmp_path, taxdump):
    path = cami(
        tmp_path / "gold.binning",
        [
            "a\tbin1\t562\t2100",
            "# comment",
            "b\tbin2\t83333\t2100",
            "c\tbin3\t9003\t2100",
            "d\tbin4\t\t5",
        ],
    )
    records = list(read_labels(path, "cami", taxdump=taxdump))
    assert [r.contig_id for r in records] == ["a", "b", "c", "d"]
    assert records[0].lineage == records[1].lineage == tuple(GTDB.split(";"))
    assert records[2].lineage[2] == "c__Methanobacteriota (no class)"
    assert records[3].lineage == ()
    # Columns may come in another order: the @@ line decides.
    other = cami(tmp_path / "o.binning", ["562\ta"], columns="TAXID\tSEQUENCEID")
    assert list(parse_cami(other, taxdump))[0].lineage == tuple(GTDB.split(";"))


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        (["a\tbin1\t562\t2100", "b\tbin1\t424242\t2100"], None, ":7: TAXID 424242 is not in"),
        (["a\tbin1\t562"], None, ":6: expected 4 tab-separated columns"),
        (["a\tbin1\tE.coli\t5"], None, ":6: TAXID must be a number"),
        (["a\tbin1\t562\t5", "a\tbin2\t562\t5"], None, ":7: contig 'a' is listed twice"),
        (["a\tbin1\t5"], "SEQUENCEID\tBINID\t_LENGTH", ":5: the @@ column line has no TAXID"),
    ],
)
def test_cami_bad(tmp_path, taxdump, rows, columns, message):
    path = cami(tmp_path / "bad.binning", rows, **({"columns": columns} if columns else {}))
    with pytest.raises(BadInputError, match="bad.binning") as info:
        list(read_labels(path, "cami", taxdump=taxdump))
    assert message in str(info.value)


def test_cami_not_cami(tmp_path, taxdump):
    path = write(tmp_path / "x.binning", "@Version:0.9\na\tbin\t562\n")
    with pytest.raises(BadInputError, match="x.binning:2: data row before"):
        list(read_labels(path, "cami", taxdump=taxdump))
    path = write(tmp_path / "y.binning", "@Version:0.9\n")
    with pytest.raises(BadInputError, match="no '@@SEQUENCEID"):
        list(read_labels(path, "cami", taxdump=taxdump))
    with pytest.raises(UsageError, match="needs --taxdump"):
        list(read_labels(path, "cami"))
    with pytest.raises(UsageError, match="only used with --format cami"):
        list(read_labels(path, "mmseqs2", taxdump=taxdump))


# ----- import into a store --------------------------------------------------------------
def test_import_summary_table_and_metadata(store, tmp_path):
    path = tsv(
        tmp_path / "t.tsv",
        [
            f"S1C3\t{GTDB}",
            "S1C0\td__Bacteria;p__Pseudomonadota",
            "S1C1\t",
            "S1C6\td__Archaea",
            "zz\t",
        ],
    )
    summary = import_labels(store, "noisy", path, format="taxometer")
    assert summary["matched"] == 3 and summary["unknown"] == 1 and summary["filtered"] == 1
    assert summary["unknown_examples"] == ["zz"] and summary["unclassified"] == 1
    assert summary["classified_at"]["domain"] == 2 and summary["classified_at"]["species"] == 1
    assert summary["taxa_added"] == 7  # d__Archaea belongs to a filtered contig only
    table, meta = store.labels("noisy")
    assert table.column("row").to_pylist() == [0, 1, 3]
    assert table.column("contig_id").to_pylist() == ["S1C0", "S1C1", "S1C3"]
    taxonomy = store.taxonomy()
    assert taxonomy.lineage_names(table.column("taxon_id")[2].as_py()) == tuple(GTDB.split(";"))
    assert table.column("taxon_id")[1].as_py() == 0
    assert meta["format"] == "taxometer" and meta["source"] == str(path.absolute())
    assert meta["source_md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert meta["tdstore.refhash"] == store.refhash and meta["counts"]["matched"] == 3
    assert label_vector(store, "noisy").tolist() == [
        taxonomy.id_of("p__Pseudomonadota"),
        0,
        -1,
        taxonomy.id_of("s__Escherichia coli"),
        -1,
        -1,
    ]
    lineages = lineage_table(store, "noisy")
    assert lineages.column("phylum").to_pylist() == ["p__Pseudomonadota", None, "p__Pseudomonadota"]
    assert lineages.column("species").to_pylist() == [None, None, "s__Escherichia coli"]
    assert check(store, "noisy", deep=True) == []


def test_formats_share_one_taxonomy(store, tmp_path, taxdump):
    import_labels(store, "gtdb", tsv(tmp_path / "t.tsv", [f"S1C0\t{GTDB}"]), format="taxometer")
    first = store.taxonomy()
    mm = write(
        tmp_path / "lca.tsv", f"S1C1\t562\tspecies\tE. coli\t-_cellular organisms;{MMSEQS}\n"
    )
    assert import_labels(store, "mm", mm, format="mmseqs2")["taxa_added"] == 0
    gold = cami(tmp_path / "g.binning", ["S1C2\tb\t562\t2100", "S1C3\tb\t9003\t2100"])
    summary = import_labels(store, "gold", gold, format="cami", taxdump=taxdump)
    assert summary["taxa_added"] == 5  # the archaeal lineage, with its placeholder class
    after = store.taxonomy()
    assert after.names[: len(first)] == first.names  # ids only appended
    assert (
        len({store.labels(n)[0].column("taxon_id")[0].as_py() for n in ("gtdb", "mm", "gold")}) == 1
    )
    assert store.labels("gold")[1]["taxdump"] == str(taxdump)


def test_gold_novel_flags_stored(store, tmp_path):
    path = tsv(
        tmp_path / "g.tsv",
        [f"S1C0\t{GTDB}\ttrue", "S1C1\td__Bacteria\tfalse"],
        "contigs\tpredictions\tnovel",
    )
    assert import_labels(store, "gold", path, format="taxometer")["novel"] == 1
    assert store.labels("gold")[0].column("novel").to_pylist() == [True, False]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["S1C0\td__A;p__X", "S1C1\td__B;p__X"],
            "t.tsv:3: ambiguous taxonomy: taxon 'p__X' has two parents",
        ),
        (["zz\td__A;p__X", "S1C1\td__B;p__X"], "t.tsv:3: ambiguous"),  # unknown contigs count too
        (["S1C0\td__A", "S1C1\td__A;c__X"], "t.tsv:3: skipped rank"),
        (["S1C0\td__A", "S1C0\td__A"], "t.tsv:3: contig 'S1C0' is listed twice"),
        (["zz\td__A", "yy\td__A"], "none of its 2 contigs is in the store"),
        (["S1C6\td__A", "S1C7\td__A"], "all 2 listed contigs are below the store's length filter"),
    ],
)
def test_failed_import_leaves_store_byte_identical(store, tmp_path, rows, message):
    import_labels(store, "first", tsv(tmp_path / "ok.tsv", [f"S1C5\t{GTDB}"]), format="taxometer")
    before = tree_hash(store.path)
    with pytest.raises(BadInputError) as info:
        import_labels(store, "second", tsv(tmp_path / "t.tsv", rows), format="taxometer")
    assert message in str(info.value)
    assert tree_hash(store.path) == before


def test_two_parents_against_the_store_taxonomy(store, tmp_path):
    import_labels(store, "a", tsv(tmp_path / "a.tsv", ["S1C0\td__A;p__X"]), format="taxometer")
    before = tree_hash(store.path)
    with pytest.raises(
        BadInputError, match=r"b.tsv:2: .*'p__X' has two parents, 'd__A' and 'd__B'"
    ):
        import_labels(store, "b", tsv(tmp_path / "b.tsv", ["S1C1\td__B;p__X"]), format="taxometer")
    assert tree_hash(store.path) == before


def test_exists_overwrite_and_not_ingested(store, tmp_path):
    path = tsv(tmp_path / "t.tsv", ["S1C0\td__A"])
    import_labels(store, "x", path, format="taxometer")
    with pytest.raises(ConflictError, match="exists"):
        import_labels(store, "x", path, format="taxometer")
    tsv(path, ["S1C0\td__A", "S1C1\td__A"])
    assert import_labels(store, "x", path, format="taxometer", overwrite=True)["matched"] == 2
    with pytest.raises(UsageError):
        import_labels(store, "../escape", path, format="taxometer")
    empty = tdstore.init(tmp_path / "empty.tdstore")
    with pytest.raises(IncompleteError, match="no contigs yet"):
        import_labels(empty, "x", path, format="taxometer")


def test_name_whose_calls_columns_collide_is_refused(store, tmp_path):
    """'a.b-c' and 'a_b.c' would both be calls' label_a_b_c_*: the second is refused, so the
    first keeps its column names (queries and saved subsets keep working)."""
    path = tsv(tmp_path / "t.tsv", [f"S1C0\t{GTDB}"])
    import_labels(store, "a.b-c", path, format="taxometer")
    assert "label_a_b_c_genus" in store.sql("SELECT * FROM calls LIMIT 0").column_names
    before = tree_hash(store.path)
    for clash in ("a_b.c", "a_b_c", "a-b-c"):
        with pytest.raises(ConflictError) as info:
            import_labels(store, clash, path, format="taxometer")
        message = str(info.value)
        assert f"label set {clash!r}" in message and "label set 'a.b-c'" in message
        assert "label_a_b_c_" in message and "\n" not in message
    assert tree_hash(store.path) == before
    # The same name again is an overwrite, not a clash.
    import_labels(store, "a.b-c", path, format="taxometer", overwrite=True)
    import_labels(store, "a_b_d", path, format="taxometer")
    columns = store.sql("SELECT * FROM calls LIMIT 0").column_names
    assert {"label_a_b_c_genus", "label_a_b_d_genus"} <= set(columns)


def test_soft_label_and_run_names_are_checked_alike(store):
    from tdstore import calls

    (store.path / "soft_labels").mkdir()
    (store.path / "soft_labels" / "kmer4.mmseqs.parquet").write_bytes(b"")
    (store.path / "runs" / "kd-a03").mkdir(parents=True)
    with pytest.raises(ConflictError, match="soft-label set 'kmer4_mmseqs'.*'kmer4.mmseqs'"):
        calls.refuse_key_clash(store, "soft", "kmer4_mmseqs")
    with pytest.raises(ConflictError, match="run 'kd.a03'.*run 'kd-a03'"):
        calls.refuse_key_clash(store, "pred", "kd.a03")
    calls.refuse_key_clash(store, "soft", "kmer4.mmseqs")  # itself: an overwrite
    calls.refuse_key_clash(store, "label", "kd_a03")  # kinds have their own columns


def test_label_file_that_is_a_pipe_or_directory(cli, store, tmp_path):
    """A pipe would be read twice (rows, then md5): refused up front, with the reason."""
    import os

    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)  # only stat()ed: nothing blocks on it
    before = tree_hash(store.path)
    for path, reason in [
        (fifo, "not a regular file (pipes are not supported: write it to a file first)"),
        (tmp_path, "is a directory"),
        (tmp_path / "nope.tsv", "no such file"),
    ]:
        result = cli("labels", "import", store.path, "x", path, "-f", "taxometer")
        assert result.exit_code == 3, result.stderr
        assert result.stderr == f"error: {path}: {reason}\n"
        with pytest.raises(BadInputError, match="pipes are not supported|directory|no such"):
            list(read_labels(path, "taxometer"))
    assert tree_hash(store.path) == before


def test_import_waits_for_the_taxonomy_lock(store, tmp_path, monkeypatch):
    import tdstore.labels as labels_mod

    monkeypatch.setattr(labels_mod, "LOCK_TIMEOUT_S", 0.1)
    path = tsv(tmp_path / "t.tsv", ["S1C0\td__A"])
    with store.lock("taxonomy"), pytest.raises(ConflictError, match="taxonomy is being written"):
        import_labels(store, "x", path, format="taxometer")
    assert not store.label_path("x").exists()


# ----- CLI ------------------------------------------------------------------------------
def test_cli_import_list_show(cli, store, tmp_path, taxdump):
    path = tsv(tmp_path / "t.tsv", [f"S1C0\t{GTDB}", "S1C1\t", "zz\td__Bacteria"])
    result = cli("labels", "import", store.path, "noisy", path, "--format", "taxometer")
    assert result.exit_code == 0, result.stderr
    assert "matched 2, unknown 1 (e.g. zz), filtered 0" in result.stdout
    assert store.label_path("noisy").exists()
    gold = cami(tmp_path / "g.binning", ["S1C0\tb\t562\t2100"])
    assert (
        cli(
            "labels", "import", store.path, "gold", gold, "-f", "cami", "--taxdump", taxdump
        ).exit_code
        == 0
    )
    listing = cli("labels", "list", store.path)
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[1].split()[:3] == ["gold", "cami", "1"] and lines[2].split()[:3] == [
        "noisy",
        "taxometer",
        "2",
    ]
    shown = cli("labels", "show", store.path, "noisy", "--limit", "1")
    assert shown.exit_code == 0 and shown.stdout == f"S1C0\t{GTDB}\n"


def test_cli_errors(cli, store, tmp_path):
    output = tsv(tmp_path / "out.tsv", ["S1C0\td__A\t0.9"], "contigs\tpredictions\tscores")
    before = tree_hash(store.path)
    result = cli("labels", "import", store.path, "x", output, "--format", "taxometer")
    assert result.exit_code == 3 and "Taxometer OUTPUT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert cli("labels", "import", store.path, "x", output, "--format", "cami").exit_code == 2
    assert cli("labels", "import", store.path, "x", output, "--format", "kraken").exit_code == 2
    assert cli("labels", "show", store.path, "nothing").exit_code == 4
    assert tree_hash(store.path) == before
    ok = tsv(tmp_path / "ok.tsv", ["S1C0\td__A"])
    assert cli("labels", "import", store.path, "x", ok, "-f", "taxometer").exit_code == 0
    assert cli("labels", "import", store.path, "x", ok, "-f", "taxometer").exit_code == 6
    assert (
        cli("labels", "import", store.path, "x", ok, "-f", "taxometer", "--overwrite").exit_code
        == 0
    )
    assert np.asarray(store.labels("x")[0].column("taxon_id")).tolist() == [
        store.taxonomy().id_of("d__A")
    ]


# ----- the simulator's four label files --------------------------------------------------
def test_simulated_label_files_import_consistently(tmp_path, monkeypatch):
    from tdstore.ingest.core import ingest
    from tdstore.simulate import FILES, simulate

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    sim = tmp_path / "sim"
    simulate(sim, n_contigs=120, seed=3, n_species=8, genome_min=20_000, genome_max=40_000)
    store = tdstore.init(tmp_path / "sim.tdstore")
    ingest(store, sim / FILES["fasta"], abundance=sim / FILES["abundance"], show_progress=False)
    summaries = {
        "mmseqs": import_labels(store, "mmseqs", sim / FILES["mmseqs2"], format="mmseqs2"),
        "noisy": import_labels(store, "noisy", sim / FILES["labels"], format="taxometer"),
        "gold": import_labels(store, "gold", sim / FILES["gold"], format="taxometer"),
        "cami": import_labels(
            store, "cami", sim / FILES["binning"], format="cami", taxdump=sim / FILES["taxdump"]
        ),
    }
    for summary in summaries.values():
        assert summary["matched"] == store.n_contigs and summary["unknown"] == 0
    # The same truth through two formats lands on the same taxa; so do the noisy labels.
    assert summaries["noisy"]["taxa_added"] == 0 and summaries["cami"]["taxa_added"] == 0
    assert label_vector(store, "mmseqs").tolist() == label_vector(store, "noisy").tolist()
    assert label_vector(store, "gold").tolist() == label_vector(store, "cami").tolist()
    assert summaries["gold"]["classified_at"]["species"] == store.n_contigs
    assert summaries["gold"]["novel"] > 0
    for name in summaries:
        assert check(store, name, deep=True) == []
