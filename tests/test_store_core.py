from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tdstore.schemas import declarations as S

import tdstore
from tdstore.atomic import atomic_path, remove_stale_temporaries
from tdstore.errors import ConflictError, IncompleteError, SchemaError, UsageError
from tdstore.store import refhash_of, validate_name
from tdstore.tables import read_table, write_table
from tdstore.taxonomy import Hierarchy, Taxonomy, parse_lineage


def test_init_then_open(tmp_path):
    store = tdstore.init(tmp_path / "s.tdstore")
    again = tdstore.open(store.path)
    assert again.manifest["schema"] == "tdstore.manifest"
    assert not again.is_ingested
    with pytest.raises(ConflictError):
        tdstore.init(store.path)


def test_open_refuses_newer_manifest(tmp_path):
    store = tdstore.init(tmp_path / "s")
    doc = json.loads((store.path / "manifest.json").read_text())
    doc["schema_version"] = 99
    (store.path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match="newer"):
        tdstore.open(store.path)


def test_open_missing_store(tmp_path):
    with pytest.raises(IncompleteError, match="not a tdstore store"):
        tdstore.open(tmp_path)


def test_refhash_depends_on_order():
    assert refhash_of(["a", "b"]) != refhash_of(["b", "a"])
    assert refhash_of(["ab"]) != refhash_of(["a", "b"])


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "a" * 200, "x..y"])
def test_bad_names(name):
    with pytest.raises(UsageError):
        validate_name(name, "run")


def test_atomic_path_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_stale_temporaries_removed(tmp_path):
    (tmp_path / "x.parquet.tmp-abc").write_text("junk")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 1 and not any(tmp_path.iterdir())


def test_table_roundtrip_and_wrong_schema(tmp_path):
    import pyarrow as pa

    path = tmp_path / "l.parquet"
    table = pa.table(
        {"row": [0, 1], "contig_id": ["a", "b"], "taxon_id": [0, 3], "novel": [None, True]}
    )
    write_table(path, S.LABELS, table, metadata={"counts": {"matched": 2}}, refhash="abc")
    back, meta = read_table(path, S.LABELS)
    assert back.column("taxon_id").to_pylist() == [0, 3]
    assert meta["counts"] == {"matched": 2} and meta["tdstore.refhash"] == "abc"
    with pytest.raises(SchemaError, match="expected 'tdstore.taxonomy'"):
        read_table(path, S.TAXONOMY)


def test_parse_lineage_formats():
    mmseqs = parse_lineage("d_Bacteria;p_Proteobacteria;c_Gammaproteobacteria", where="f:1")
    gtdb = parse_lineage("d__Bacteria;p__Proteobacteria;c__Gammaproteobacteria", where="f:1")
    bare = parse_lineage("Bacteria;Proteobacteria;Gammaproteobacteria", where="f:1")
    assert mmseqs == gtdb == bare == ("d__Bacteria", "p__Proteobacteria", "c__Gammaproteobacteria")
    assert parse_lineage("", where="f:1") == ()
    assert parse_lineage("-_cellular organisms;d_Bacteria;k_X", where="f:1") == ("d__Bacteria",)
    assert parse_lineage("d__Bacteria;p__A;c__B;o__C;f__D;g__E;s__", where="f:1")[-1] == "g__E"


@pytest.mark.parametrize("text", ["d__Bacteria;c__Gamma", "d__Bacteria;;c__Gamma", "d__A;p__;c__B"])
def test_parse_lineage_skipped_rank(text):
    from tdstore.errors import BadInputError

    with pytest.raises(BadInputError, match="f.tsv:7"):
        parse_lineage(text, where="f.tsv:7")


def test_taxonomy_two_parents():
    from tdstore.errors import BadInputError

    tax = Taxonomy.empty()
    tax.add_lineage(("d__A", "p__X"), where="f:1")
    with pytest.raises(BadInputError, match="two parents"):
        tax.add_lineage(("d__B", "p__X"), where="f:2")


def _toy_taxonomy():
    tax = Taxonomy.empty()
    ids = {}
    for lineage in [
        ("d__A", "p__A1", "c__A1a"),
        ("d__A", "p__A1", "c__A1b"),
        ("d__A", "p__A2"),
        ("d__B",),
    ]:
        ids[lineage[-1]] = tax.add_lineage(lineage, where="t")
    return tax, ids


def test_hierarchy_ranges_and_probabilities():
    tax, ids = _toy_taxonomy()
    h = Hierarchy.from_labels(
        tax, [ids["c__A1a"], ids["c__A1b"], ids["p__A2"], ids["d__B"], tax.id_of("p__A1")]
    )
    assert [tax.names[t] for t in h.leaf_ids] == ["c__A1a", "c__A1b", "p__A2", "d__B"]
    lo, hi = h.label_ranges(np.array([tax.id_of("p__A1"), 0, ids["d__B"]]))
    assert lo.tolist() == [0, 0, 3] and hi.tolist() == [2, 4, 4]
    leaf_probs = np.array([[0.5, 0.3, 0.1, 0.1]])
    node = h.node_probabilities(leaf_probs)
    assert node[0, h.node_index[tax.id_of("d__A")]] == pytest.approx(0.9)
    assert node[0, h.node_index[tax.id_of("p__A1")]] == pytest.approx(0.8)
    chain = h.predict_chain(node)
    assert [tax.names[h.node_ids[i]] for i in chain[0] if i >= 0] == ["d__A", "p__A1"]


def test_taxonomy_table_roundtrip_and_rank_matrix():
    tax, ids = _toy_taxonomy()
    back = Taxonomy.from_table(tax.to_table())
    assert back.names == tax.names and back.parents == tax.parents
    matrix = back.rank_matrix([ids["c__A1a"], 0])
    assert matrix[0, :3].tolist() == tax.lineage_ids(ids["c__A1a"]) and matrix[0, 3] == -1
    assert (matrix[1] == -1).all()


def test_cli_init_info_check(cli, tmp_path):
    path = tmp_path / "s.tdstore"
    assert cli("init", path).exit_code == 0
    result = cli("info", path, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["contigs"] == 0
    assert cli("check", path).exit_code == 0
    again = cli("init", path)
    assert again.exit_code == 6 and "already a tdstore store" in again.stderr


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from tdstore.cli.main import app; assert 'torch' not in sys.modules; assert 'duckdb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flipped_bits_in_table_pages_are_refused(tmp_path):
    """Page checksums: a bit flipped anywhere before the footer never reads as other data."""
    import numpy as np
    import pyarrow as pa
    from tdstore.schemas import declarations as S

    from tdstore.errors import SchemaError
    from tdstore.tables import read_table, write_table

    rows = 300
    table = pa.table(
        {
            "row": pa.array(np.arange(rows), pa.int64()),
            "contig_id": [f"S1C{i}" for i in range(rows)],
            "taxon_id": pa.array(np.arange(rows) % 7, pa.int64()),
            "novel": pa.array([None] * rows, pa.bool_()),
        }
    )
    path = tmp_path / "labels.parquet"
    write_table(path, S.LABELS, table, refhash="r")
    good, _ = read_table(path, S.LABELS)
    data = path.read_bytes()
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    silent = []
    for offset in range(4, footer, 7):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            got, _ = read_table(path, S.LABELS)
        except SchemaError:
            continue
        if not got.equals(good):
            silent.append(offset)
    assert silent == []


@pytest.fixture
def foreign_embeddings(cli, tmp_path, monkeypatch):
    """A store holding its own k-mer set and one copied from a store of other contigs."""

    monkeypatch.setenv("TDSTORE_QUIET", "1")
    fasta = Path(__file__).parent / "data" / "bad" / "good.fna"
    stores = {}
    for name, min_length in (("s", 100), ("other", 335)):  # other: c4..c6 only
        path = tmp_path / f"{name}.tdstore"
        args = ("ingest", path, "--fasta", fasta, "--min-length", min_length)
        assert cli(*args).exit_code == 0
        assert cli("embed", path, "--model", "kmer:4").exit_code == 0
        stores[name] = path
    shutil.copytree(
        stores["other"] / "embeddings" / "kmer4.zarr", stores["s"] / "embeddings" / "foreign.zarr"
    )
    return stores["s"]


def test_check_names_each_object_once(foreign_embeddings, cli):
    """It printed 'embeddings/foreign.zarr: embeddings/foreign.zarr: made for ...'."""
    result = cli("check", foreign_embeddings)
    assert result.exit_code == 5
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: embeddings/foreign.zarr: made for other store content "
        f"(refhash {_refhash(foreign_embeddings.parent / 'other.tdstore')[:12]}, "
        f"store {_refhash(foreign_embeddings)[:12]})"
    ]


def _refhash(path) -> str:
    return tdstore.open(path).refhash


def test_one_location_keeps_the_problem_kind(tmp_path):
    from tdstore.check import _one_location
    from tdstore.errors import UnfinishedProblem

    store = tdstore.init(tmp_path / "s.tdstore")
    absolute = f"{store.path}/labels/x.parquet"
    assert _one_location(store, f"labels/x.parquet: {absolute}: bad") == "labels/x.parquet: bad"
    unfinished = _one_location(store, UnfinishedProblem("a/b: a/b: unfinished; re-run"))
    assert unfinished == "a/b: unfinished; re-run" and isinstance(unfinished, UnfinishedProblem)
    for kept in ("a/b: c/d: x", "a/b: x", "no location here"):
        assert _one_location(store, kept) == kept


def test_info_shows_an_embedding_set_of_other_content_as_not_usable(foreign_embeddings, cli):
    result = cli("info", foreign_embeddings, "--json")
    assert result.exit_code == 0, result.stderr
    embeddings = json.loads(result.stdout)["embeddings"]
    assert embeddings["foreign"]["complete"] is False and embeddings["foreign"]["current"] is False
    assert embeddings["kmer4"]["complete"] is True and embeddings["kmer4"]["current"] is True
    assert "complete=False  current=False" in cli("info", foreign_embeddings).stdout


def test_check_json_keeps_the_exit_code(foreign_embeddings, cli):
    (foreign_embeddings / "labels.tmp-0123456789ab").mkdir()  # a killed writer's leftover
    result = cli("check", foreign_embeddings, "--json")
    assert result.exit_code == 5
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == 5
    text = cli("check", foreign_embeddings).stderr.splitlines()
    assert report["problems"] == [
        line.removeprefix("problem: ") for line in text if line.startswith("problem: ")
    ]
    assert report["problems"][0].startswith("embeddings/foreign.zarr: made for other store")
    assert report["notes"] == [
        "leftover of a killed or running command (--clean removes): labels.tmp-0123456789ab"
    ]
    assert not any(line.startswith(("problem:", "note:")) for line in result.stderr.splitlines())
    # healthy and merely unfinished stores keep their codes too (0 and 4)
    shutil.rmtree(foreign_embeddings / "embeddings" / "foreign.zarr")
    shutil.rmtree(foreign_embeddings / "labels.tmp-0123456789ab")
    healthy = cli("check", foreign_embeddings, "--json")
    assert healthy.exit_code == 0
    assert json.loads(healthy.stdout) == {
        "store": str(foreign_embeddings),
        "ok": True,
        "problems": [],
        "notes": [],
        "exit_code": 0,
    }
    shutil.rmtree(foreign_embeddings / "embeddings" / "kmer4.zarr" / "shards" / "0")
    unfinished = cli("check", foreign_embeddings, "--json")
    assert unfinished.exit_code == 4 and json.loads(unfinished.stdout)["exit_code"] == 4
