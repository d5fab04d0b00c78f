"""The ``calls`` view and its cache: same rows as the joins it replaces, never used stale."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest
from _sqlstore import KEPT, METABULI, MMSEQS, make_store
from tdstore.schemas import declarations as S

import tdstore
from tdstore import calls
from tdstore import sql as tsql
from tdstore.check import check_store
from tdstore.errors import UsageError
from tdstore.tables import read_table, write_table
from tdstore.taxonomy import RANKS, Taxonomy, parse_lineage

# The per-rank agreement as the README wrote it before calls: a join of two label sets.
JOIN_AGREEMENT = """
WITH pairs AS (
  SELECT a.taxon_id AS ta, b.taxon_id AS tb, count(*) AS n
  FROM labels a JOIN labels b USING (row)
  WHERE a.label_set = '{a}' AND b.label_set = '{b}' GROUP BY ALL
), per_rank AS (
  SELECT unnest(['domain', 'phylum', 'class', 'order', 'family', 'genus', 'species']) AS rank,
         unnest([x.domain, x.phylum, x.class, x."order", x.family, x.genus, x.species]) AS a,
         unnest([y.domain, y.phylum, y.class, y."order", y.family, y.genus, y.species]) AS b, n
  FROM pairs JOIN lineages x ON x.taxon_id = ta JOIN lineages y ON y.taxon_id = tb
)
SELECT rank, sum(n)::BIGINT AS both_labelled, sum(n) FILTER (a = b) / sum(n) AS agreement
FROM per_rank WHERE a IS NOT NULL AND b IS NOT NULL GROUP BY rank ORDER BY rank_depth(rank)"""


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.tdstore")


def _query(store, sql: str, *, mode: str) -> pa.Table:
    con = tsql.connect(store, calls=mode)
    try:
        return tsql.execute(con, sql)
    finally:
        con.close()


def _cache_files(store) -> list[str]:
    folder = store.path / "cache"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _cache_problems(store) -> list[str]:
    # The hand-made store has no sequences: check only what concerns the cache.
    return [p for p in check_store(store, deep=True) if "cache/" in p]


@pytest.mark.parametrize("block", [2, 3, 1 << 18])
def test_cached_view_equals_the_join_form(store, block, monkeypatch):
    # Small blocks: sources (predictions cover rows 0-1) straddle the block edges.
    monkeypatch.setattr(calls, "BLOCK_ROWS", block)
    joined = _query(store, "SELECT * FROM calls ORDER BY row", mode="use")
    assert _cache_files(store) == []  # "use" never builds
    cached = _query(store, "SELECT * FROM calls", mode="build")
    assert _cache_files(store) == ["calls.duckdb"]  # no temporaries, WAL or spill left
    assert calls.is_current(store)
    assert cached.column_names == calls.column_names(calls.sources(store))
    assert cached.column("row").to_pylist() == list(range(len(KEPT)))  # row order
    assert cached.equals(joined.cast(cached.schema))


def test_columns_match_the_views_they_come_from(store):
    store.sql("SELECT count(*) FROM calls")  # builds the cache
    for view, name_column, prefix, name in (
        ("labels", "label_set", "label_mmseqs_", "mmseqs"),
        ("soft_labels", "soft_label_set", "soft_teacher_", "teacher"),
        ("predictions", "run", "pred_kd_a03_", "kd-a03"),  # '-' becomes '_'
    ):
        fields = ["taxon_id", *RANKS]
        got = store.sql(
            "SELECT row, "
            + ", ".join(f'"{prefix}{f}" AS "{f}"' for f in fields)
            + f' FROM calls WHERE "{prefix}taxon_id" IS NOT NULL ORDER BY row'
        )
        quoted = ", ".join(f'"{f}"' for f in fields)
        want = store.sql(
            f"SELECT row, {quoted} FROM {view} WHERE {name_column} = '{name}' ORDER BY row"
        )
        assert got.equals(want), view
    probs = store.sql(
        "SELECT soft_teacher_p_genus AS p, soft_teacher_confidence AS c FROM calls ORDER BY row"
    )
    want = store.sql("SELECT lineage_probs[6] AS p, confidence AS c FROM soft_labels ORDER BY row")
    assert probs.equals(want)
    scores = store.sql("SELECT pred_kd_a03_score_domain AS s FROM calls ORDER BY row")
    assert scores.column("s").to_pylist()[:3] == pytest.approx([0.9, 0.7, None], nan_ok=True)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "by-name"])
def test_readme_forms_give_the_join_forms_answers(store, packed, monkeypatch):
    if not packed:  # a tree whose codes would not fit: rank_agreement compares names
        monkeypatch.setattr(calls, "MAX_CODE_BITS", 1)
    fast = store.sql(
        "SELECT contig_id, label_mmseqs_family AS mmseqs, soft_teacher_family AS teacher "
        "FROM calls WHERE label_mmseqs_genus <> soft_teacher_genus ORDER BY contig_id"
    )
    slow = store.sql(
        "SELECT l.contig_id, l.family AS mmseqs, s.family AS teacher FROM labels l "
        "JOIN soft_labels s USING (row) WHERE l.label_set = 'mmseqs' AND l.genus <> s.genus "
        "ORDER BY l.contig_id"
    )
    assert fast.equals(slow)
    for a, b in (("mmseqs", "metabuli"), ("metabuli", "mmseqs")):
        got = store.sql(f"SELECT * FROM rank_agreement('label_{a}', 'label_{b}')")
        assert got.equals(store.sql(JOIN_AGREEMENT.format(a=a, b=b)))
    # By hand: both labelled to species on rows 0, 1, 2; they agree on 0 and 2.
    species = store.sql("SELECT * FROM rank_agreement('label_mmseqs', 'label_metabuli')")
    assert species.to_pylist()[-1] == {
        "rank": "species",
        "both_labelled": 3,
        "agreement": pytest.approx(2 / 3),
    }
    assert MMSEQS[:3] == ["fragilis", "uniformis", "vulgatus"] and METABULI[1] == "fragilis"
    with pytest.raises(UsageError, match="SQL:"):
        store.sql("SELECT * FROM rank_agreement('label_mmseqs', 'label_nosuch')")


def test_subset_source_equals_the_join_it_replaced(store):
    from tdstore.subsets import CONTIG_COLUMNS, LABEL_COLUMNS, where_sql

    text = where_sql("true", "metabuli")
    fast = store.sql(text.split("\nSELECT")[0] + "\nSELECT * FROM subset_source ORDER BY row")
    contig = ", ".join(f"c.{c}" for c in CONTIG_COLUMNS)
    label = ", ".join(f'l."{c}"' for c in LABEL_COLUMNS)
    slow = store.sql(
        f"SELECT {contig}, {label} FROM contigs c LEFT JOIN labels l ON l.row = c.row "
        "AND l.label_set = 'metabuli' WHERE c.kept ORDER BY c.row"
    )
    assert fast.equals(slow.cast(fast.schema))
    assert "root" in fast.column("taxon_name").to_pylist()  # row 5: unclassified


def test_lineage_codes_agree_exactly_where_names_do():
    """Every pair of taxa of a hand-made tree: the XOR test gives the shared depth."""
    taxonomy = Taxonomy.empty()
    for text in (
        "d__A;p__B;c__C;o__D;f__E;g__F;s__G",
        "d__A;p__B;c__C;o__D;f__E;g__F;s__H",
        "d__A;p__B;c__C;o__D;f__E;g__I",
        "d__A;p__B;c__J",
        "d__K;p__L",
        *(f"d__A;p__B;c__C;o__D;f__E;g__F;s__S{i}" for i in range(40)),
    ):
        taxonomy.add_lineage(parse_lineage(text, where="t"), where="t")
    codes, depth, low = calls.lineage_codes(taxonomy)
    matrix = taxonomy.rank_matrix(np.arange(len(taxonomy)))
    for a in range(len(taxonomy)):
        for b in range(len(taxonomy)):
            x = int(codes[a]) ^ int(codes[b])
            shared = sum(1 for r in range(7) if x < (1 << low[r]))
            same = 0
            while same < 7 and matrix[a, same] >= 0 and matrix[a, same] == matrix[b, same]:
                same += 1
            assert min(shared, depth[a], depth[b]) == min(same, depth[a], depth[b])


def test_stale_cache_is_never_used(store):
    store.sql("SELECT count(*) FROM calls")
    assert calls.is_current(store)
    # Re-import mmseqs with every contig unclassified: the cache's key no longer matches.
    table, meta = read_table(store.label_path("mmseqs"), S.LABELS)
    table = table.set_column(2, "taxon_id", pa.array([0] * len(KEPT), pa.int64()))
    write_table(store.label_path("mmseqs"), S.LABELS, table, metadata=meta)
    assert not calls.is_current(store)
    sql = "SELECT count(label_mmseqs_family) AS n FROM calls"
    assert _query(store, sql, mode="use").column("n").to_pylist() == [0]  # join form
    assert not calls.is_current(store)  # "use" did not rebuild
    assert store.sql(sql).column("n").to_pylist() == [0]  # rebuilt, then read
    assert calls.is_current(store)


def test_names_that_would_collide_keep_their_spelling(store):
    shutil.copy(store.label_path("mmseqs"), store.label_path("gold-v1"))
    shutil.copy(store.label_path("mmseqs"), store.label_path("gold_v1"))
    shutil.copy(store.label_path("mmseqs"), store.label_path("gold.v2"))
    columns = store.sql("SELECT * FROM calls LIMIT 0").column_names
    assert {"label_gold-v1_genus", "label_gold_v1_genus", "label_gold_v2_genus"} <= set(columns)
    assert len(columns) == len(set(columns))


def test_a_colliding_newcomer_does_not_rename_existing_columns(store):
    """Imports refuse a name whose columns another set has; one copied in by hand anyway
    must not move the existing set's columns (queries and saved subsets use them)."""
    shutil.copy(store.label_path("mmseqs"), store.label_path("a.b-c"))
    before = store.sql("SELECT * FROM calls LIMIT 0").column_names
    assert "label_a_b_c_genus" in before
    shutil.copy(store.label_path("mmseqs"), store.label_path("a_b.c"))
    after = store.sql("SELECT * FROM calls LIMIT 0").column_names
    assert set(before) < set(after) and "label_a_b.c_genus" in after
    assert len(after) == len(set(after))


def test_new_source_rebuilds_and_dropped_source_is_gone(store):
    store.sql("SELECT count(*) FROM calls")
    shutil.copy(store.label_path("mmseqs"), store.label_path("gold"))
    assert "label_gold_species" in store.sql("SELECT * FROM calls").column_names
    store.label_path("gold").unlink()
    assert "label_gold_species" not in store.sql("SELECT * FROM calls").column_names


@pytest.mark.parametrize("damage", ["garbage", "foreign", "truncated"])
def test_damaged_cache_is_reported_and_never_trusted(store, damage):
    import duckdb

    store.sql("SELECT count(*) FROM calls")
    path = calls.cache_path(store)
    if damage == "garbage":
        path.write_bytes(b"not a database" * 100)
    elif damage == "foreign":
        path.unlink()
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE calls AS SELECT 1 AS row")
        con.close()
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    problems = check_store(store)
    assert any("cache/calls.duckdb" in p and "never used" in p for p in problems), problems
    got = _query(store, "SELECT label_mmseqs_taxon_id AS t FROM calls ORDER BY row", mode="use")
    assert got.num_rows == len(KEPT)  # answered from the join form
    store.sql("SELECT count(*) FROM calls")  # rebuilt over the damaged file
    assert calls.is_current(store) and _cache_problems(store) == []


def test_store_that_cannot_be_written_still_answers(store):
    expected = _query(store, "SELECT * FROM calls ORDER BY row", mode="use")
    # cache/ taken by a file and .locks by a file: neither the lock nor the cache can be made.
    (store.path / "cache").write_text("in the way")
    assert store.sql("SELECT * FROM calls ORDER BY row").equals(expected)
    (store.path / "cache").unlink()
    shutil.rmtree(store.path / ".locks", ignore_errors=True)
    (store.path / ".locks").write_text("in the way")
    assert store.sql("SELECT * FROM calls ORDER BY row").equals(expected)
    assert not (store.path / "cache").exists()


def test_unsorted_source_gets_no_cache_but_an_answer(store):
    table, meta = read_table(store.label_path("metabuli"), S.LABELS)
    write_table(
        store.label_path("metabuli"), S.LABELS, table.take(list(range(6, -1, -1))), metadata=meta
    )
    expected = _query(store, "SELECT * FROM calls ORDER BY row", mode="use")
    assert not calls.refresh(store)  # the streaming build needs row-sorted sources
    assert store.sql("SELECT * FROM calls ORDER BY row").equals(expected)
    assert _cache_files(store) == []


def test_queries_without_calls_build_nothing(store, cli):
    assert cli("sql", store.path, "SELECT count(*) FROM labels").exit_code == 0
    assert cli("sql", store.path, "COPY (SELECT * FROM calls) TO 'x.csv'").exit_code != 0
    assert _cache_files(store) == []
    result = cli("sql", store.path, "SELECT count(*) AS n FROM calls", "--format", "csv")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == str(len(KEPT))
    assert _cache_files(store) == ["calls.duckdb"]


def test_sandbox_holds_with_the_cache_attached(store, tmp_path):
    store.sql("SELECT count(*) FROM calls")
    con = tsql.connect(store)
    for statement in (
        f"ATTACH '{tmp_path / 'x.db'}'",
        f"COPY (SELECT * FROM calls) TO '{tmp_path / 'x.csv'}'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute(statement)
    with pytest.raises(UsageError, match="only read queries"):
        tsql.execute(con, "DETACH tdstore_calls")
    con.close()
    assert [p.name for p in tmp_path.iterdir()] == ["s.tdstore"]


def test_check_info_and_empty_store(store, tmp_path, cli):
    assert calls.list_names(store) == []
    store.sql("SELECT count(*) FROM calls")
    assert calls.list_names(store) == ["calls"]
    assert _cache_problems(store) == []
    detail = calls.describe(store, "calls")
    assert detail["rows"] == len(KEPT) and detail["current"] is True
    result = cli("info", store.path, "--json")
    assert result.exit_code == 0 and '"calls"' in result.stdout
    empty = tdstore.init(tmp_path / "empty")
    table = empty.sql("SELECT * FROM calls")
    assert table.num_rows == 0 and table.column_names == list(calls.CONTIG_COLUMNS)
    assert not (empty.path / "cache").exists()
