"""`tdstore sql`: views match the files behind them, lineage helpers, the sandbox, the CLI."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _sqlstore import KEPT, MMSEQS, make_store
from tdstore.schemas import declarations as S

import tdstore
from tdstore import sql as tsql
from tdstore.errors import ConflictError, UsageError
from tdstore.tables import read_table, write_table


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("sql") / "s.tdstore")


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def _same(got: pa.Table, expected: pa.Table) -> bool:
    """Same columns, types and values (DuckDB reports every column as nullable)."""
    return got.column_names == expected.column_names and got.equals(expected.cast(got.schema))


def test_contigs_and_taxonomy_views_match_files(store):
    contigs, _ = read_table(store.core_dir / "contigs.parquet", S.CONTIGS)
    assert _same(store.sql("SELECT * FROM contigs"), contigs)
    taxonomy, _ = read_table(store.taxonomy_path, S.TAXONOMY)
    assert _same(_sorted(store.sql("SELECT * FROM taxonomy"), ["taxon_id"]), taxonomy)


@pytest.mark.parametrize(
    "view,column,folder,spec",
    [
        ("labels", "label_set", "labels", S.LABELS),
        ("soft_labels", "soft_label_set", "soft_labels", S.SOFT_LABELS),
    ],
)
def test_named_table_views_match_files(store, view, column, folder, spec):
    names = store.list_objects(folder, ".parquet")
    assert names
    for name in names:
        expected, _ = read_table(store.path / folder / f"{name}.parquet", spec)
        got = store.sql(
            f"SELECT {', '.join(spec.column_names)} FROM {view} WHERE {column} = '{name}' ORDER BY row"
        )
        assert _same(got, expected), name


def test_predictions_metrics_runs_views(store):
    for run in ("baseline", "kd-a03"):
        expected, _ = read_table(store.path / "runs" / run / "predictions.parquet", S.PREDICTIONS)
        cols = ", ".join(S.PREDICTIONS.column_names)
        got = store.sql(f"SELECT {cols} FROM predictions WHERE run = '{run}' ORDER BY row")
        assert _same(got, expected)
    files = [store.path / "runs" / r / "metrics.parquet" for r in ("baseline", "kd-a03")]
    files.append(store.path / "metrics" / "labels-mmseqs.parquet")
    expected = pa.concat_tables([read_table(f, S.METRICS)[0] for f in files])
    got = store.sql("SELECT * FROM metrics")
    assert _same(_sorted(got, ["source", "rank"]), _sorted(expected, ["source", "rank"]))
    runs = store.sql(
        "SELECT name, status, labels, alpha, temperature, epochs, optimizer_lr, config FROM runs ORDER BY name"
    )
    assert runs.column("name").to_pylist() == ["baseline", "kd-a03"]
    assert runs.column("alpha").to_pylist() == [1.0, 0.3]
    assert runs.column("optimizer_lr").to_pylist() == [0.001, 0.001]
    assert json.loads(runs.column("config")[0].as_py())["fit"]["temperature"] == 4.0
    # Declared columns are filled from the one nested key of that name (config.fit.alpha).
    assert runs.column("temperature").to_pylist() == [4.0, 4.0]
    assert runs.column("epochs").to_pylist() == [3, 3]
    nulls = store.sql("SELECT typeof(optimizer_clip_norm) AS t FROM runs LIMIT 1")
    assert nulls.column("t").to_pylist() == ["VARCHAR"]


def test_best_species_f1_query(store):
    got = store.sql(
        "SELECT r.name, m.f1 FROM runs r JOIN metrics m ON m.source = r.name "
        "WHERE m.rank = 'species' AND m.\"group\" = 'all' ORDER BY m.f1 DESC"
    )
    assert got.column("name").to_pylist() == ["kd-a03", "baseline"]


def test_empty_store_has_every_view_with_declared_columns(tmp_path):
    store = tdstore.init(tmp_path / "empty")
    for view, spec in (
        ("contigs", S.CONTIGS),
        ("taxonomy", S.TAXONOMY),
        ("metrics", S.METRICS),
    ):
        table = store.sql(f"SELECT * FROM {view}")
        assert table.num_rows == 0 and table.column_names == spec.column_names
    labels = store.sql("SELECT * FROM labels")
    assert labels.num_rows == 0
    assert labels.column_names == ["label_set", *S.LABELS.column_names, *tsql.LINEAGE_COLUMNS]
    assert store.sql("SELECT * FROM soft_labels").column_names[0] == "soft_label_set"
    assert store.sql("SELECT * FROM predictions").column_names[0] == "run"
    for view, first in (("runs", "name"), ("embeddings", "name"), ("subsets", "name")):
        table = store.sql(f"SELECT * FROM {view}")
        assert table.num_rows == 0 and table.column_names[0] == first
    assert store.sql("SELECT * FROM subset_rows").column_names == ["name", "row"]
    lineages = store.sql("SELECT * FROM lineages")
    assert lineages.column("rank").to_pylist() == ["root"]


def test_show_tables_lists_the_views(store):
    names = set(store.sql("SHOW TABLES").column("name").to_pylist())
    assert names == set(tsql.VIEWS)
    described = store.sql("DESCRIBE labels").column("column_name").to_pylist()
    assert described == ["label_set", *S.LABELS.column_names, *tsql.LINEAGE_COLUMNS]


def test_lineages_on_hand_made_tree(store):
    rows = store.sql("SELECT * FROM lineages ORDER BY taxon_id").to_pylist()
    by_name = {r["name"]: r for r in rows}
    fragilis = by_name["s__Bacteroides fragilis"]
    assert fragilis["depth"] == 7 and fragilis["rank"] == "species"
    assert (fragilis["domain"], fragilis["family"], fragilis["genus"]) == (
        "d__Bacteria",
        "f__Bacteroidaceae",
        "g__Bacteroides",
    )
    assert fragilis["lineage"].startswith("d__Bacteria;p__Bacteroidota;") and fragilis[
        "lineage"
    ].endswith(";s__Bacteroides fragilis")
    bacilli = by_name["c__Bacilli"]
    assert bacilli["class"] == "c__Bacilli" and bacilli["order"] is None and bacilli["depth"] == 3
    assert by_name["root"]["depth"] == 0 and by_name["root"]["domain"] is None


def test_labels_have_rank_columns_and_rank_name(store):
    got = store.sql(
        "SELECT row FROM labels WHERE label_set = 'mmseqs' AND genus = 'g__Bacteroides' ORDER BY row"
    )
    expected = [i for i, t in enumerate(MMSEQS) if t in {"fragilis", "uniformis", "bacteroides"}]
    assert got.column("row").to_pylist() == expected
    got = store.sql(
        "SELECT row, rank_name(taxon_id, 'family') AS family, rank_name(taxon_id, 'Species') AS sp "
        "FROM labels WHERE label_set = 'mmseqs' ORDER BY row"
    ).to_pylist()
    assert got[0]["family"] == "f__Bacteroidaceae" and got[0]["sp"] == "s__Bacteroides fragilis"
    assert got[3]["family"] is None  # c__Bacilli stops above family
    assert got[4]["family"] is None  # unclassified (root)
    assert got[6]["sp"] is None and got[6]["family"] == "f__Bacteroidaceae"
    assert store.sql("SELECT rank_depth('genus') AS d").column("d").to_pylist() == [6]
    # In a WHERE clause too (a subquery over lineages would capture the name taxon_id).
    by_macro = store.sql(
        "SELECT row FROM labels WHERE rank_name(taxon_id, 'genus') = 'g__Bacteroides' "
        "AND label_set = 'mmseqs' ORDER BY row"
    )
    by_column = store.sql(
        "SELECT row FROM labels WHERE genus = 'g__Bacteroides' AND label_set = 'mmseqs' "
        "ORDER BY row"
    )
    assert by_macro.equals(by_column) and by_macro.num_rows == 4


@pytest.mark.parametrize(
    "query",
    [
        "SELECT rank_name(taxon_id, 'famly') FROM labels",
        "SELECT rank_name(0, 'genera')",  # a taxon with no row still checks the rank
        "SELECT rank_depth('famly')",
    ],
)
def test_misspelt_rank_is_an_error_naming_the_ranks(store, query):
    """A misspelt rank used to give NULLs, read as 'no ancestor at that rank'."""
    with pytest.raises(UsageError, match=r"unknown rank '(famly|genera)'; ranks are domain, .*"):
        store.sql(query)
    # NULL stays NULL (a rank column of a table may hold nulls), not an error.
    got = store.sql("SELECT rank_name(1, NULL) AS a, rank_depth(NULL) AS b").to_pylist()
    assert got == [{"a": None, "b": None}]


def test_label_agreement_query(store):
    got = store.sql(
        "SELECT count(*) FILTER (a.species = b.species) AS same, count(*) AS n FROM labels a "
        "JOIN labels b ON a.row = b.row WHERE a.label_set = 'mmseqs' AND b.label_set = 'metabuli' "
        "AND a.species IS NOT NULL AND b.species IS NOT NULL"
    ).to_pylist()[0]
    assert got == {"same": 2, "n": 3}


# ----- sandbox ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT * FROM contigs) TO '{out}'",
        "COPY contigs TO '{out}' (FORMAT parquet)",
        "EXPORT DATABASE '{out}'",
        "ATTACH '{out}' AS x",
        "SELECT 1; COPY (SELECT 1) TO '{out}'",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
        "CREATE TABLE t AS SELECT 1",
        "SET enable_external_access = true",
        "SET VARIABLE x = 1",
        "INSTALL httpfs",
        "PRAGMA version",
    ],
)
def test_writes_refused_and_nothing_created(store, tmp_path, query):
    out = tmp_path / "out.csv"
    with pytest.raises(UsageError, match="only read queries"):
        store.sql(query.format(out=out))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sandbox_holds_below_the_statement_check(store, tmp_path):
    """Even on the raw connection (no statement check) nothing outside the store opens."""
    con = tsql.connect(store)
    inside = store.path / "labels" / "evil.csv"
    for statement in (
        f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'",
        f"COPY (SELECT 1) TO '{inside}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_text('{store.core_dir / 'core.json'}')",
        f"ATTACH '{tmp_path / 'x.db'}'",
    ):
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute(statement)
    for statement in (
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET allowed_directories = ['/']",
        "SET lock_configuration = false",
    ):
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(statement)
    con.close()
    assert list(tmp_path.iterdir()) == [] and not inside.exists()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
        "SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM glob('{store}/*')",
    ],
)
def test_outside_reads_refused(store, tmp_path, query):
    outside = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), outside)
    with pytest.raises(UsageError, match=r"^SQL: .*cannot write files"):
        store.sql(query.format(outside=outside, store=store.path))


def test_sql_error_is_one_line(store):
    with pytest.raises(UsageError) as info:
        store.sql("SELECT nope FROM contigs")
    assert str(info.value).startswith("SQL: ") and "\n" not in str(info.value)


def test_stale_labels_refused(tmp_path):
    store = make_store(tmp_path / "s")
    table, meta = read_table(store.label_path("mmseqs"), S.LABELS)
    write_table(store.label_path("mmseqs"), S.LABELS, table, refhash="0" * 64)
    with pytest.raises(ConflictError, match="other store content"):
        store.sql("SELECT 1")


# ----- CLI --------------------------------------------------------------------------------
def test_cli_formats(store, cli, tmp_path):
    result = cli(
        "sql",
        store.path,
        "SELECT row, contig_id FROM contigs WHERE kept ORDER BY row",
        "--format",
        "csv",
    )
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0] == '"row","contig_id"' and len(lines) == 1 + len(KEPT)
    result = cli("sql", store.path, "SELECT 1 AS a, 'x' AS b", "--format", "tsv")
    assert result.stdout.splitlines() == ["a\tb", "1\tx"]
    result = cli(
        "sql",
        store.path,
        "SELECT leaf_ids, confidence FROM soft_labels LIMIT 1",
        "--format",
        "json",
    )
    record = json.loads(result.stdout.splitlines()[0])
    assert isinstance(record["leaf_ids"], list) and record["confidence"] > 0.9
    result = cli(
        "sql", store.path, "SELECT name, depth FROM lineages ORDER BY taxon_id", "--limit", "2"
    )
    assert result.exit_code == 0 and "root" in result.stdout and "d__Bacteria" in result.stdout
    assert "more rows" in result.stdout
    out = tmp_path / "r.parquet"
    result = cli("sql", store.path, "SELECT * FROM labels", "--format", "parquet", "--output", out)
    assert result.exit_code == 0 and pq.read_table(out).num_rows == 2 * len(KEPT)
    out = tmp_path / "r.csv"
    result = cli(
        "sql",
        store.path,
        "SELECT leaf_ids FROM soft_labels ORDER BY row LIMIT 1",
        "--format",
        "csv",
        "--output",
        out,
    )
    assert out.read_text().splitlines()[1].startswith('"[')


def test_cli_output_inside_the_store_refused(cli, tmp_path):
    """--output must never replace (or sit among) the store's own files, symlinks resolved."""
    from crashkit import raw_digests

    store = make_store(tmp_path / "s.tdstore")
    (tmp_path / "link").symlink_to(store.path / "core")
    before = raw_digests(store.path)
    for output in [
        store.path / "core" / "contigs.parquet",
        store.path / "new.csv",
        tmp_path / "link" / "contigs.parquet",
        tmp_path / "out" / ".." / "s.tdstore" / "x.csv",
    ]:
        result = cli("sql", store.path, "SELECT 1 AS x", "--format", "parquet", "-o", output)
        assert result.exit_code == 2, (output, result.stderr)
        assert result.stderr.startswith("error: --output") and "inside the store" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert raw_digests(store.path) == before
    assert tdstore.open(store.path).n_contigs == len(KEPT)
    with pytest.raises(UsageError, match="inside the store"):
        tsql.write_output(pa.table({"x": [1]}), "csv", store.path / "x.csv", store=store)
    outside = tmp_path / "x.csv"
    assert cli("sql", store.path, "SELECT 1 AS x", "-o", outside).exit_code == 0
    assert outside.read_text() == '"x"\n1\n'


def test_cli_errors(store, cli, tmp_path):
    result = cli("sql", store.path, "SELECT * FROM labels", "--format", "parquet")
    assert result.exit_code == 2 and "--output" in result.stderr
    out = tmp_path / "x.csv"
    result = cli("sql", store.path, f"COPY contigs TO '{out}'")
    assert result.exit_code == 2 and result.stderr.startswith("error: SQL:") and not out.exists()
    result = cli("sql", store.path, "SELECT * FROM read_csv('/etc/passwd')")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    result = cli("sql", store.path, "SELEC 1")
    assert result.exit_code == 2 and "error: SQL:" in result.stderr
