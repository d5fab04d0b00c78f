"""Saved subsets (create/list/show/drop, refhash check) and chunk-wise feature loading."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zarr
from _sqlstore import KEPT, MMSEQS, make_store
from tdstore.schemas import declarations as S

import tdstore
from tdstore import subsets
from tdstore.errors import ConflictError, IncompleteError, UsageError
from tdstore.features.load import load_features, read_rows
from tdstore.features.normalise import NormalisationStats
from tdstore.tables import read_table


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.tdstore")


def test_where_with_labels(store):
    result = subsets.create(store, "bacteroides", where="genus = 'g__Bacteroides'", labels="mmseqs")
    expected = [i for i, t in enumerate(MMSEQS) if t in {"fragilis", "uniformis", "bacteroides"}]
    assert result["n_rows"] == len(expected)
    rows = subsets.load_rows(store, "bacteroides")
    assert rows.dtype == np.int64 and rows.tolist() == expected
    table, meta = read_table(subsets.subset_path(store, "bacteroides"), S.SUBSET)
    assert meta["tdstore.refhash"] == store.refhash
    # The label columns come from the calls view (no join), under their subset_source names.
    assert '"label_mmseqs_genus" AS "genus"' in meta["sql"] and "FROM calls" in meta["sql"]
    assert "genus = 'g__Bacteroides'" in meta["sql"]
    import hashlib

    assert meta["sql_hash"] == hashlib.sha256(meta["sql"].encode()).hexdigest()
    assert subsets.check(store, "bacteroides", deep=True) == []


def test_where_on_contig_columns_and_label_hint(store):
    subsets.create(store, "s2-long", where="sample = 'S2' AND length >= 4000")
    assert subsets.load_rows(store, "s2-long").tolist() == [3, 5, 6]
    with pytest.raises(UsageError, match="--labels"):
        subsets.create(store, "x", where="genus = 'g__Bacteroides'")


def test_sql_by_contig_id_drops_filtered(store):
    result = subsets.create(
        store, "s1", sql="SELECT contig_id FROM contigs WHERE sample = 'S1' ORDER BY length"
    )
    assert subsets.load_rows(store, "s1").tolist() == [0, 1, 2]  # sorted; S1C9 is filtered
    assert result["filtered_dropped"] == 1
    with pytest.raises(UsageError, match="not in the store, e.g. 'nope'"):
        subsets.create(store, "bad", sql="SELECT 'nope' AS contig_id")
    with pytest.raises(UsageError, match="row or contig_id"):
        subsets.create(store, "bad", sql="SELECT 1 AS x")
    with pytest.raises(UsageError, match="outside the store"):
        subsets.create(store, "bad", sql="SELECT 99 AS row")
    with pytest.raises(UsageError, match="only read queries"):
        subsets.create(store, "bad", sql="COPY contigs TO 'x.csv'")


@pytest.mark.parametrize("name", ["mm-seqs.v2", "mm_seqs.v2"])
def test_where_with_labels_whose_name_has_dash_or_dot(store, name):
    """calls spells '-' and '.' of a set's name as '_'; --where --labels must too."""
    import shutil

    shutil.copy(store.label_path("mmseqs"), store.label_path(name))
    result = subsets.create(store, "b", where="genus = 'g__Bacteroides'", labels=name)
    expected = [i for i, t in enumerate(MMSEQS) if t in {"fragilis", "uniformis", "bacteroides"}]
    assert result["n_rows"] == len(expected)
    assert '"label_mm_seqs_v2_genus" AS "genus"' in result["sql"]


@pytest.mark.parametrize(
    "sql,got",
    [
        ("SELECT 'abc' AS row", "VARCHAR"),  # was a ValueError traceback
        ("SELECT '0' AS row", "VARCHAR"),  # was read as row 0
        ("SELECT 1.7 AS row", "DECIMAL(2,1)"),  # was truncated to row 1
        ("SELECT 1.0::DOUBLE AS row", "DOUBLE"),
        ("SELECT NULL AS row", '"NULL"'),
        ("SELECT 3 AS contig_id", "INTEGER"),
    ],
)
def test_sql_row_must_be_an_integer_column(store, sql, got):
    column = "contig_id" if "contig_id" in sql else "row"
    with pytest.raises(UsageError, match=f"column {column} must be .*, not {re.escape(got)}$"):
        subsets.create(store, "bad", sql=sql)
    assert not subsets.subset_path(store, "bad").exists()
    for ok in ("SELECT 2::TINYINT AS row", "SELECT 2::UBIGINT AS row", "SELECT 2::HUGEINT AS row"):
        subsets.create(store, "ok", sql=ok, overwrite=True)
        assert subsets.load_rows(store, "ok").tolist() == [2]


@pytest.mark.parametrize(
    "kind,text",
    [
        ("sql", "SELECT row FROM contigs WHERE sample = 'S2' -- the second sample"),
        ("sql", "SELECT contig_id FROM contigs WHERE sample = 'S2' -- by id"),
        ("where", "sample = 'S2' -- the second sample"),
    ],
)
def test_trailing_comment_is_not_a_syntax_error(store, kind, text):
    """User SQL is wrapped in parentheses: a -- comment must not swallow the closing one."""
    result = subsets.create(store, "s2", **{kind: text})
    assert subsets.load_rows(store, "s2").tolist() == [3, 4, 5, 6]
    assert result["n_rows"] == 4


def test_sql_by_row_with_soft_labels(store):
    subsets.create(
        store,
        "confident",
        sql="SELECT row FROM soft_labels WHERE confidence > 0.92 ORDER BY row DESC",
    )
    assert subsets.load_rows(store, "confident").tolist() == [0, 3]


def test_empty_overwrite_drop(store):
    with pytest.raises(UsageError, match="no rows"):
        subsets.create(store, "none", where="length > 1e9")
    assert not subsets.subset_path(store, "none").exists()
    subsets.create(store, "none", where="length > 1e9", allow_empty=True)
    assert subsets.load_rows(store, "none").size == 0
    with pytest.raises(ConflictError, match="--overwrite"):
        subsets.create(store, "none", where="length > 0")
    subsets.create(store, "none", where="length > 0", overwrite=True)
    assert subsets.load_rows(store, "none").size == len(KEPT)
    assert subsets.list_names(store) == ["none"]
    subsets.drop(store, "none")
    assert subsets.list_names(store) == []
    with pytest.raises(IncompleteError, match="no subset 'none'"):
        subsets.load_rows(store, "none")
    with pytest.raises(UsageError, match="invalid"):
        subsets.create(store, "../evil", where="true")


def test_refhash_mismatch_refused(store):
    subsets.create(store, "all", where="true")
    core = json.loads((store.core_dir / "core.json").read_text())
    core["refhash"] = "f" * 64
    (store.core_dir / "core.json").write_text(json.dumps(core))
    changed = tdstore.open(store.path)
    with pytest.raises(ConflictError, match="other store content"):
        subsets.load_rows(changed, "all")
    assert subsets.describe(changed, "all")["current"] is False
    assert any("other store content" in p for p in subsets.check(changed, "all", deep=False))


def test_subsets_views(store):
    subsets.create(store, "s2", where="sample = 'S2'")
    got = store.sql("SELECT name, n_rows, current, sql_hash FROM subsets").to_pylist()
    assert got[0]["name"] == "s2" and got[0]["n_rows"] == 4 and got[0]["current"] is True
    rows = store.sql("SELECT row FROM subset_rows WHERE name = 's2' ORDER BY row")
    assert rows.column("row").to_pylist() == [3, 4, 5, 6]


def test_cli_subset_commands(store, cli):
    result = cli(
        "subset",
        "create",
        store.path,
        "gut",
        "--where",
        "genus = 'g__Phocaeicola'",
        "--labels",
        "metabuli",
    )
    assert result.exit_code == 0 and "1 rows" in result.stdout
    result = cli("subset", "create", store.path, "gut", "--where", "true")
    assert result.exit_code == 6 and "--overwrite" in result.stderr
    result = cli("subset", "create", store.path, "x", "--where", "true", "--sql", "SELECT 1 AS row")
    assert result.exit_code == 2
    result = cli("subset", "create", store.path, "x", "--where", "length < 0")
    assert result.exit_code == 2 and "no rows" in result.stderr
    result = cli("subset", "list", store.path)
    assert result.exit_code == 0 and result.stdout.startswith("gut ")
    result = cli("subset", "show", store.path, "gut")
    assert (
        result.exit_code == 0
        and "g__Phocaeicola" in result.stdout
        and "current    True" in result.stdout
    )
    result = cli("subset", "drop", store.path, "gut")
    assert result.exit_code == 0 and not subsets.subset_path(store, "gut").exists()
    result = cli("subset", "show", store.path, "gut")
    assert result.exit_code == 4


# ----- loading ----------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("block_bytes", [1, 1000, 1 << 30])
def test_read_rows_matches_numpy(tmp_path, chunk, block_bytes):
    data = np.arange(200 * 5, dtype=np.float32).reshape(200, 5)
    array = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=data.shape, chunks=(chunk, 5), dtype="float32"
    )
    array[:] = data
    rng = np.random.default_rng(chunk)
    for rows in (
        np.array([], dtype=np.int64),
        np.array([0]),
        np.array([199]),
        np.arange(200),
        np.sort(rng.choice(200, 37, replace=False)),
        np.arange(60, 130),
    ):
        np.testing.assert_array_equal(read_rows(array, rows, block_bytes=block_bytes), data[rows])
    with pytest.raises(ValueError, match="sorted"):
        read_rows(array, np.array([5, 3]))
    with pytest.raises(ValueError, match="within"):
        read_rows(array, np.array([200]))


def _naive(store, rows):
    stats = NormalisationStats.from_dict(store.core["normalisation"])
    tnf, abundance = store.tnf(), store.abundance()
    return stats.transform(
        np.stack([tnf[int(r)] for r in rows]), np.stack([abundance[int(r)] for r in rows])
    )


def test_load_features_equals_naive_gather(store):
    subsets.create(store, "odd", sql="SELECT row FROM contigs WHERE row % 2 = 1")
    for subset, rows in (
        (None, np.arange(len(KEPT))),
        ("odd", np.array([1, 3, 5])),
        (np.array([6, 0, 4, 4]), np.array([0, 4, 6])),
    ):
        got = load_features(store, subset, block_bytes=1)  # tiny blocks: many chunk runs
        np.testing.assert_array_equal(got, _naive(store, rows))
        assert got.shape == (rows.size, 2 + 103 + 1) and got.dtype == np.float32
    np.testing.assert_array_equal(store.load_features("odd"), _naive(store, [1, 3, 5]))
    with pytest.raises(UsageError, match="outside"):
        load_features(store, np.array([7]))


def test_load_features_needs_normalisation(store):
    core = json.loads((store.core_dir / "core.json").read_text())
    del core["normalisation"]
    (store.core_dir / "core.json").write_text(json.dumps(core))
    with pytest.raises(IncompleteError, match="normalisation"):
        load_features(tdstore.open(store.path))
