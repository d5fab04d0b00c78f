"""CAMI export with a taxdump: TAXID is the dump's taxid (what AMBER reads), matched by
rank, name and ancestry; end to end on the simulator's own taxdump and gold standard."""

from __future__ import annotations

from pathlib import Path

import pytest
from _simstore import simulated_store

from tdstore.ingest.taxdump import TaxDump
from tdstore.taxonomy import Taxonomy, parse_lineage

NODES = [  # taxid, parent, rank, name
    (1, 1, "no rank", "root"),
    (2, 1, "superkingdom", "Bacteria"),
    (1239, 2, "phylum", "Bacillota"),
    (91061, 1239, "class", "Bacilli"),
    (1385, 91061, "order", "Bacillales"),
    (186817, 1385, "family", "Bacillaceae"),
    (1386, 186817, "genus", "Bacillus"),
    (1423, 1386, "species", "Bacillus subtilis"),
    (2759, 1, "superkingdom", "Eukaryota"),
    (6656, 2759, "phylum", "Arthropoda"),
    (50557, 6656, "class", "Insecta"),
    (7022, 50557, "order", "Phasmida"),
    (55081, 7022, "family", "Bacillidae"),
    (55087, 55081, "genus", "Bacillus"),  # the stick insect: same name, same rank
    (2157, 1, "domain", "Archaea"),
    (28890, 2157, "phylum", "Methanobacteriota"),
    (2158, 28890, "order", "Methanobacteriales"),  # no class above it
    (2159, 2158, "family", "Methanobacteriaceae"),
]


def make_dump(folder: Path, *, prefixed: bool = False) -> TaxDump:
    folder.mkdir()
    letters = {"superkingdom": "d", "domain": "d", "phylum": "p", "class": "c", "order": "o",
               "family": "f", "genus": "g", "species": "s"}  # fmt: skip
    nodes = "".join(f"{t}\t|\t{p}\t|\t{r}\t|\t\t|\n" for t, p, r, _ in NODES)
    names = "".join(
        f"{t}\t|\t{letters[r] + '__' + n if prefixed and r in letters else n}\t|\t\t|\tscientific name\t|\n"
        for t, _, r, n in NODES
    )
    (folder / "nodes.dmp").write_text(nodes)
    (folder / "names.dmp").write_text(names)
    return TaxDump.load(folder)


def store_taxonomy(*lineages: str) -> Taxonomy:
    taxonomy = Taxonomy.empty()
    for text in lineages:
        taxonomy.add_lineage(parse_lineage(text, where="t", fill_gaps=True), where="t")
    return taxonomy


BACILLUS = "d__Bacteria;p__Bacillota;c__Bacilli;o__Bacillales;f__Bacillaceae;g__Bacillus;s__Bacillus subtilis"
ARCHAEON = "d__Archaea;p__Methanobacteriota;o__Methanobacteriales;f__Methanobacteriaceae"
UNKNOWN = "d__Bacteria;p__Bacillota;c__Bacilli;o__Simorder1"


@pytest.mark.parametrize("prefixed", [False, True])
def test_taxids_matched_by_rank_name_and_ancestry(tmp_path, prefixed):
    dump = make_dump(tmp_path / "dump", prefixed=prefixed)
    taxonomy = store_taxonomy(BACILLUS, ARCHAEON, UNKNOWN)
    taxid_of = {taxonomy.names[t]: x for t, x in dump.taxids_of(taxonomy).items()}
    assert taxid_of["g__Bacillus"] == 1386  # the bacterium, not the stick insect 55087
    assert taxid_of["s__Bacillus subtilis"] == 1423
    assert taxid_of["f__Methanobacteriaceae"] == 2159  # below a placeholder class
    assert "c__Methanobacteriota (no class)" not in taxid_of
    assert "o__Simorder1" not in taxid_of  # not in the dump
    assert taxid_of["d__Bacteria"] == 2 and taxid_of["d__Archaea"] == 2157


def test_homonyms_named_after_their_parent_find_their_own_taxid(tmp_path):
    dump = make_dump(tmp_path / "dump")
    taxonomy = store_taxonomy(BACILLUS)
    homonyms: list[tuple[str, str, str]] = []
    insect = "d__Eukaryota;p__Arthropoda;c__Insecta;o__Phasmida;f__Bacillidae;g__Bacillus"
    taxonomy.add_lineage(parse_lineage(insect, where="t"), where="t", homonyms=homonyms)
    assert homonyms[0][1] == "g__Bacillus (Bacillidae)"
    taxid_of = {taxonomy.names[t]: x for t, x in dump.taxids_of(taxonomy).items()}
    assert taxid_of["g__Bacillus"] == 1386 and taxid_of["g__Bacillus (Bacillidae)"] == 55087


def test_a_homonym_under_a_placeholder_parent_finds_its_taxid(tmp_path):
    """Methanobacteriales has no class above it: a homonym of it is named after the
    placeholder, 'o__Methanobacteriales (Methanobacteriota (no class))'."""
    dump = make_dump(tmp_path / "dump")
    taxonomy = store_taxonomy("d__Bacteria;p__Bacillota;c__Bacilli;o__Methanobacteriales")
    homonyms: list[tuple[str, str, str]] = []
    taxonomy.add_lineage(
        parse_lineage(ARCHAEON, where="t", fill_gaps=True), where="t", homonyms=homonyms
    )
    nested = "o__Methanobacteriales (Methanobacteriota (no class))"
    assert homonyms[0][1] == nested
    taxid_of = {taxonomy.names[t]: x for t, x in dump.taxids_of(taxonomy).items()}
    assert taxid_of[nested] == 2158 and taxid_of["f__Methanobacteriaceae"] == 2159
    assert "o__Methanobacteriales" not in taxid_of  # no such order under the Bacilli


def test_a_homonym_with_no_ancestor_to_decide_stays_unmatched(tmp_path):
    dump = make_dump(tmp_path / "dump")
    # A store genus whose ancestors the dump does not know: two Bacillus genera fit.
    taxonomy = store_taxonomy(
        "d__Simdomain;p__Simphylum;c__Simclass;o__Simorder;f__Simfamily;g__Bacillus"
    )
    assert dump.taxids_of(taxonomy) == {}


def test_cami_export_with_the_gold_standards_taxdump(tmp_path, monkeypatch, cli):
    import torch

    from tdstore.labels import import_labels
    from tdstore.student.fit import FitConfig
    from tdstore.student.train import TrainRequest, train

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    torch.set_num_threads(1)
    store, sim = simulated_store(tmp_path, seed=8)
    import_labels(store, "mmseqs", sim["mmseqs2_path"], format="mmseqs2")
    fit = FitConfig(epochs=4, batch_size=64, lr=1e-2, hidden=32, patience=None)
    train(store, TrainRequest(labels="mmseqs", name="plain", fit=fit), progress=False)
    out = tmp_path / "plain.binning"
    result = cli(
        "export", store.path, "plain", "--format", "cami", "--output", out,
        "--threshold", "0.5", "--taxdump", sim["taxdump_path"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "note:" not in result.stderr  # every simulated taxon is in the simulator's dump
    dump = TaxDump.load(sim["taxdump_path"])
    gold = {}
    for line in Path(sim["binning_path"]).read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and not line.startswith("@"):
            gold[fields[0]] = int(fields[2])
    rows = [
        line.split("\t") for line in out.read_text().splitlines() if line and line[0] not in "@"
    ]
    assert len(rows) > 100
    species_hits = 0
    for contig, taxid, rank, lineage in rows:
        called = tuple(lineage.split(";"))
        depth = ("domain", "phylum", "class", "order", "family", "genus", "species").index(rank) + 1
        # The TAXID names exactly the called lineage down to _RANK ...
        assert dump.lineages([int(taxid)])[int(taxid)] == called[:depth]
        # ... and a right species call carries the gold standard's own TAXID.
        gold_lineage = dump.lineages([gold[contig]])[gold[contig]]
        if depth == 7 and called == gold_lineage:
            assert int(taxid) == gold[contig]
            species_hits += 1
    assert species_hits > 50
    # A dump without the species: calls are written at their genus, and the note says so.
    partial = tmp_path / "partial"
    partial.mkdir()
    nodes = Path(sim["taxdump_path"], "nodes.dmp").read_text().splitlines()
    (partial / "nodes.dmp").write_text("\n".join(n for n in nodes if "\tspecies\t" not in n) + "\n")
    (partial / "names.dmp").write_text(Path(sim["taxdump_path"], "names.dmp").read_text())
    cut = cli(
        "export", store.path, "plain", "--format", "cami", "--output", tmp_path / "cut.binning",
        "--threshold", "0.5", "--taxdump", partial,
    )  # fmt: skip
    assert cut.exit_code == 0, cut.stderr
    assert "contigs written at an ancestor of their call" in cut.stderr
    cut_rows = (tmp_path / "cut.binning").read_text().splitlines()
    ranks = {r.split("\t")[2] for r in cut_rows if r and r[0] != "@" and r.count("\t") == 3}
    assert "species" not in ranks and "genus" in ranks
    refused = cli(
        "export", store.path, "plain", "--format", "taxometer", "--output", tmp_path / "x.tsv",
        "--taxdump", sim["taxdump_path"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "only used with --format cami" in refused.stderr


def test_export_reports_calls_the_taxdump_does_not_know(tmp_path):
    import pyarrow as pa

    from tdstore.export import cami_lines

    dump = make_dump(tmp_path / "dump")
    taxonomy = store_taxonomy(BACILLUS, UNKNOWN)
    ids = {name: t for t, name in enumerate(taxonomy.names)}
    chain = [ids[n] for n in UNKNOWN.split(";")]
    table = pa.table(
        {
            "contig_id": ["a", "b"],
            "lineage_ids": [chain, chain[:1]],
            "lineage_scores": [[1.0] * 4, [1.0]],
        }
    )
    lines = cami_lines(table, taxonomy, {}, threshold=0.5, taxids=dump.taxids_of(taxonomy))
    rows = [line for line in lines if line.startswith(("a\t", "b\t"))]
    # o__Simorder1 is unknown: contig a goes to its class, Bacilli (91061).
    assert rows == [f"a\t91061\tclass\t{UNKNOWN}\n", "b\t2\tdomain\td__Bacteria\n"]
