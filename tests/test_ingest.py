"""Ingest: FASTA and abundance readers on good and bad files, core layout, atomicity, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

import tdstore
from tdstore.errors import BadInputError, ConflictError
from tdstore.features.tnf import tnf
from tdstore.ingest import core as core_mod
from tdstore.ingest.abundance import read_abundance
from tdstore.ingest.core import ingest
from tdstore.ingest.fasta import read_fasta_batches, sample_of
from tdstore.store import refhash_of


def _random_seq(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.fixture
def contigs():
    rng = np.random.default_rng(7)
    return {
        "S1C1": _random_seq(rng, 2500),
        "S1C2": _random_seq(rng, 300),  # filtered at min_length 1000
        "S2C3": _random_seq(rng, 1200) + "NNRY" + _random_seq(rng, 100),
        "S2C4": _random_seq(rng, 1500).lower(),
    }


def _write_fasta(path, contigs, *, crlf=False, width=60):
    nl = "\r\n" if crlf else "\n"
    text = "".join(
        f">{cid} some description{nl}"
        + nl.join(seq[i : i + width] for i in range(0, len(seq), width))
        + nl
        for cid, seq in contigs.items()
    )
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    return path


def _write_abundance(path, ids, samples=("s1", "s2"), extra=()):
    rows = ["contigname\t" + "\t".join(samples)]
    for i, cid in enumerate(list(ids) + list(extra)):
        rows.append(cid + "\t" + "\t".join(f"{i + j * 0.5:.2f}" for j in range(len(samples))))
    path.write_text("\n".join(rows) + "\n")
    return path


def _snapshot(root, *, skip=(".locks",)):
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in skip:
            continue
        out[str(rel)] = p.read_bytes() if p.is_file() else None
    return out


# ----- FASTA reader ---------------------------------------------------------------------
@pytest.mark.parametrize("name,crlf", [("c.fa", False), ("c.fa.gz", False), ("c.fa", True)])
def test_fasta_reader_good(tmp_path, contigs, name, crlf):
    path = _write_fasta(tmp_path / name, contigs, crlf=crlf)
    batches = list(read_fasta_batches(path, batch_contigs=3))
    assert [len(b) for b in batches] == [3, 1]
    ids = [i for b in batches for i in b.ids]
    assert ids == list(contigs)
    batch = batches[0]
    assert batch.data[: batch.offsets[1]] == contigs["S1C1"].encode()
    s2c3 = contigs["S2C3"]
    assert batch.n_count[2] == 4
    acgt = s2c3.replace("N", "").replace("R", "").replace("Y", "")
    assert batch.gc[2] == pytest.approx((acgt.count("G") + acgt.count("C")) / len(acgt))
    assert batch.md5[2] == hashlib.md5(s2c3.encode()).hexdigest()
    # lower case input is upper-cased before hashing and storing
    last = batches[1]
    assert last.data == contigs["S2C4"].upper().encode()
    assert last.md5[0] == hashlib.md5(contigs["S2C4"].upper().encode()).hexdigest()
    assert last.first_record == 4


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "no FASTA records"),
        (b"ACGT\nACGT\n", "not a FASTA file"),
        (b"@r1\nACGT\n+\nIIII\n", "not a FASTA file"),
        (bytes(range(256)) * 4, "not a FASTA file"),
        (b">a\nACGT\n>b x\nAC\n>a\nGG\n", "record 3: duplicate contig id 'a'"),
        (b">a\nACGT\n>b\n>c\nAC\n", r"record 2 \('b'\): empty sequence"),
        (b">a\nACGT\n> \nAC\n", "record 2: empty FASTA header"),
        (b">a\nAC-GT\n", r"record 1 \('a'\): character '-'"),
        (">a\nACGT\n>b\nACG\u00e9\n".encode(), r"record 2 \('b'\): binary data or non-ASCII"),
        (gzip.compress(b">a\nACGT\n" * 50)[:30], "not a FASTA file or damaged"),
        # needletail would decode the byte as U+FFFD: an id no other file spells that way.
        (b">a\nACGT\n>b\xff x\nAC\n", "record 2: header is not UTF-8"),
    ],
)
def test_fasta_reader_bad(tmp_path, content, message):
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message) as info:
        list(read_fasta_batches(path))
    assert str(path) in str(info.value)


def test_fasta_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        list(read_fasta_batches(tmp_path / "nope.fa"))


def test_directories_and_pipes_are_named_as_such(tmp_path, contigs):
    """Inputs are read twice (parse, md5): a pipe is refused up front, with the reason."""
    import os

    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # only stat()ed: nothing blocks on it
    pipe = r"fifo: not a regular file \(pipes are not supported: write it to a file first\)"
    with pytest.raises(BadInputError, match=pipe):
        list(read_fasta_batches(fifo))
    with pytest.raises(BadInputError, match=f"{tmp_path}: is a directory"):
        list(read_fasta_batches(tmp_path))
    for bad, abundance in [(fifo, None), (tmp_path, None), (fasta, fifo), (fasta, tmp_path)]:
        with pytest.raises(BadInputError, match="not a regular file|is a directory"):
            ingest(tmp_path / "s", bad, abundance=abundance, show_progress=False)
        assert not (tmp_path / "s").exists()  # refused before a store was made


def _protein(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=n))


@pytest.mark.parametrize("batch_contigs", [1, 20_000])
def test_protein_and_rna_fasta_refused(tmp_path, monkeypatch, batch_contigs):
    monkeypatch.setattr("tdstore.ingest.fasta._BATCH_CONTIGS", batch_contigs)
    rng = np.random.default_rng(5)
    protein = _write_fasta(tmp_path / "p.fa", {f"p{i}": _protein(rng, 400) for i in range(5)})
    rna = {f"r{i}": _random_seq(rng, 400).replace("T", "U") for i in range(5)}
    rna = _write_fasta(tmp_path / "r.fa", rna)
    store = tdstore.init(tmp_path / "s")
    before = _snapshot(store.path)
    with pytest.raises(BadInputError, match=r"p\.fa: mostly non-nucleotide letters .*protein"):
        ingest(store, protein, min_length=100, show_progress=False)
    with pytest.raises(BadInputError, match=r"r\.fa: mostly non-nucleotide .*'U'.*RNA FASTA"):
        ingest(store, rna, min_length=100, show_progress=False)
    assert _snapshot(store.path) == before


@pytest.mark.parametrize("batch_contigs", [1, 20_000])
def test_ambiguity_codes_and_a_stray_odd_record_are_still_dna(tmp_path, monkeypatch, batch_contigs):
    """N and IUPAC codes count as nucleotides; the share is over the whole file."""
    monkeypatch.setattr("tdstore.ingest.fasta._BATCH_CONTIGS", batch_contigs)
    rng = np.random.default_rng(6)
    contigs = {f"c{i}": _random_seq(rng, 300) + "N" * 200 + "RYSWKMBDHV" * 5 for i in range(9)}
    contigs["odd"] = _protein(rng, 300)  # one record of ten: 4% of the letters are not DNA
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=100, show_progress=False)
    assert store.n_contigs == 10


def test_sample_of():
    assert sample_of("S12C345") == "S12"
    assert sample_of("S1CNODE_1_length_5") == "S1"
    assert sample_of("contig_1") is None and sample_of("S1") is None and sample_of("SxC1") is None


# ----- abundance reader -----------------------------------------------------------------
def test_abundance_reader_good(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("contigname\tA\tB\r\nc2\t1\t2.5\r\nc1\t0\t1e3\r\n\r\n\n")
    table = read_abundance(path)
    assert table.samples == ["A", "B"] and table.ids == ["c2", "c1"]
    np.testing.assert_array_equal(table.values[table.index["c1"]], [0, 1000])


@pytest.mark.parametrize("compress", [False, True])
def test_abundance_reader_accepts_a_byte_order_mark(tmp_path, compress):
    """Spreadsheets save UTF-8 with a BOM before 'contigname'; the label reader takes it too."""
    text = "\ufeffcontigname\tA\tB\nc2\t1\t2.5\nc1\t0\t1e3\n".encode()
    path = tmp_path / "a.tsv"
    path.write_bytes(gzip.compress(text) if compress else text)
    table = read_abundance(path)
    assert table.samples == ["A", "B"] and table.ids == ["c2", "c1"]
    np.testing.assert_array_equal(table.values[table.index["c1"]], [0, 1000])
    assert table.md5 == hashlib.md5(path.read_bytes()).hexdigest()  # of the file as given


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty file"),
        ("contig\tA\nc1\t1\n", "line 1: header must start with 'contigname'"),
        ("contigname\n", "no sample columns"),
        ("contigname\tA\tA\nc1\t1\t2\n", "sample 'A' appears twice"),
        ("contigname\tA\nc1\t1\nc2\tabc\n", "line 3: sample 'A': 'abc' is not a number"),
        ("contigname\tA\nc1\t-1\n", "line 2: sample 'A': negative"),
        ("contigname\tA\nc1\tnan\n", "line 2: .* not finite"),
        ("contigname\tA\nc1\tinf\n", "line 2: .* not finite"),
        ("contigname\tA\tB\nc1\t1\n", "line 2: expected 3 tab-separated columns"),
        ("contigname\tA\nc1\t1\n\nc2\t2\n", "line 3: expected 2"),
        ("contigname\tA\nc1\t1\nc1\t2\n", "line 3: contig 'c1' appears twice"),
        # float() reads digit separators; a TSV writer never means them so.
        ("contigname\tA\nc1\t1_000\n", "line 2: sample 'A': '1_000' is not a number"),
    ],
)
def test_abundance_reader_bad(tmp_path, text, message):
    path = tmp_path / "a.tsv"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message) as info:
        read_abundance(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "contigname\tA\tB\nc2\t1\t2.5\nc1\t0\t1e3\n",
        "contigname\tA\tB\r\nc2\t1\t2.5\r\nc1\t0\t1e3\r\n\r\n\n",  # CRLF, trailing blanks
        "contigname\tA\nc1\t0.1\nc2\t3.4028234e38\nc3\t1e-45\nc4\t-0\nc5\t+7\n",
        "contigname\tA\nc1\t 1\nc2\t2 \n",  # float() accepts these; Arrow may not
        "contigname\tA\nc1\t1\n  \n",  # a trailing line of spaces
        "contigname\tA\nc1\t1",  # no final newline
        "contigname\tA\n",  # header only
    ],
)
def test_abundance_fast_reader_agrees_with_line_reader(tmp_path, text):
    from tdstore.ingest.abundance import _read_fast, _read_lines

    path = tmp_path / "a.tsv"
    path.write_text(text, newline="")
    samples, ids, values, index = _read_lines(path, text.encode())
    table = read_abundance(path)
    assert (table.samples, table.ids, table.index) == (samples, ids, index)
    assert table.values.dtype == np.float32
    np.testing.assert_array_equal(table.values, values)
    fast = _read_fast(text.encode())
    if fast is not None:  # whatever it accepts, it reads exactly as the line reader
        assert fast[:2] == (samples, ids) and fast[3] == index
        np.testing.assert_array_equal(fast[2], values)


def test_abundance_fast_reader_reads_vamb_tables_exactly(tmp_path):
    from tdstore.ingest.abundance import _read_fast, _read_lines

    rng = np.random.default_rng(3)
    depth = rng.lognormal(0.0, 3.0, size=(500, 3))
    rows = [f"S1C{i}\t" + "\t".join(repr(float(d)) for d in row) for i, row in enumerate(depth)]
    text = ("contigname\ta\tb\tc\n" + "\n".join(rows) + "\n").encode()
    fast = _read_fast(text)
    assert fast is not None  # a plain vamb table takes the fast path
    slow = _read_lines(tmp_path / "a.tsv", text)
    assert fast[:2] == slow[:2] and fast[3] == slow[3]
    np.testing.assert_array_equal(fast[2], slow[2])
    np.testing.assert_array_equal(fast[2], depth.astype(np.float32))


# ----- ingest ---------------------------------------------------------------------------
def test_ingest_writes_core(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa.gz", contigs)
    kept = ["S1C1", "S2C3", "S2C4"]
    abundance = _write_abundance(tmp_path / "a.tsv", reversed(list(contigs)), extra=["zz"])
    store = tdstore.init(tmp_path / "s")
    summary = ingest(store, fasta, abundance=abundance, min_length=1000, show_progress=False)
    assert summary["contigs"] == 3 and summary["filtered"] == 1
    assert summary["abundance_rows"]["rows_unknown_contig"] == 1
    assert summary["abundance_rows"]["rows_filtered_contig"] == 1

    store = tdstore.open(store.path)
    assert list(store.contig_ids()) == kept
    assert store.refhash == refhash_of(kept)
    assert store.samples == ["s1", "s2"]
    core = store.core
    assert core["n_bases"] == sum(len(contigs[c]) for c in kept)
    assert core["sources"]["fasta"]["md5"] == hashlib.md5(fasta.read_bytes()).hexdigest()

    table = store.contigs(kept_only=False).to_pydict()
    assert table["contig_id"] == list(contigs)
    assert table["row"] == [0, None, 1, 2]
    assert table["kept"] == [True, False, True, True]
    assert table["sample"] == ["S1", "S1", "S2", "S2"]

    tnf_array = store.tnf()
    assert tnf_array.shape == (3, 103)
    assert tnf_array.attrs["tdstore"]["refhash"] == store.refhash
    np.testing.assert_allclose(tnf_array[:], tnf([contigs[c] for c in kept]), atol=1e-6)
    ab = store.abundance()[:]
    # abundance row of contig i (file order reversed): value = index in the file
    order = list(reversed(list(contigs)))
    np.testing.assert_allclose(ab[:, 0], [order.index(c) for c in kept])
    assert store.abundance().attrs["tdstore"]["samples"] == ["s1", "s2"]

    seqs = dict(store.iter_sequences())
    assert seqs[2] == contigs["S2C4"].upper()
    from tdstore.check import check_store

    assert check_store(store, deep=True) == []

    stats = core["normalisation"]
    full = tnf_array[:].astype(float)
    np.testing.assert_allclose(stats["tnf_mean"], full.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(stats["tnf_std"], full.std(axis=0), atol=1e-7)
    from tdstore.features.normalise import NormalisationStats

    expected = NormalisationStats.fit(full, ab)
    assert stats["abundance_column_sums"] == pytest.approx(expected.abundance_column_sums)
    assert stats["log_total_mean"] == pytest.approx(expected.log_total_mean)


def test_ingest_without_abundance_and_sample_option(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=1000, sample="gut", show_progress=False)
    store = tdstore.open(store.path)
    assert store.samples == [] and store.abundance().shape == (3, 0)
    assert set(store.contigs().column("sample").to_pylist()) == {"gut"}


def test_ingest_streams_in_many_batches(tmp_path, monkeypatch):
    """Small batches and chunks: rows, TNF and moments must not depend on batching."""
    rng = np.random.default_rng(3)
    contigs = {f"c{i}": _random_seq(rng, int(rng.integers(50, 400))) for i in range(120)}
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    monkeypatch.setattr("tdstore.ingest.fasta._BATCH_CONTIGS", 7)
    monkeypatch.setattr(core_mod, "chunk_rows", lambda n_cols, itemsize: 10)
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=100, show_progress=False)
    store = tdstore.open(store.path)
    kept = [c for c, s in contigs.items() if len(s) >= 100]
    assert list(store.contig_ids()) == kept
    full = store.tnf()[:]
    np.testing.assert_allclose(full, tnf([contigs[c] for c in kept]), atol=1e-6)
    np.testing.assert_allclose(store.core["normalisation"]["tnf_std"], full.std(axis=0), atol=1e-7)


def test_missing_abundance_row_is_error_and_store_unchanged(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    abundance = _write_abundance(tmp_path / "a.tsv", ["S1C1", "S1C2"])
    store = tdstore.init(tmp_path / "s")
    before = _snapshot(store.path)
    with pytest.raises(BadInputError, match=r"2 kept contig\(s\) have no abundance row, e.g. S2C3"):
        ingest(store, fasta, abundance=abundance, min_length=1000, show_progress=False)
    assert _snapshot(store.path) == before
    assert not store.is_ingested


def test_crash_during_write_leaves_store_byte_identical(tmp_path, contigs, monkeypatch):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=1000, show_progress=False)
    before = _snapshot(store.path, skip=())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    # Crash after every array and table is written, just before core.json.
    monkeypatch.setattr(core_mod, "write_json_atomic", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(store, fasta, min_length=10, overwrite=True, show_progress=False)
    assert _snapshot(store.path, skip=()) == before


def test_stale_staging_removed_and_reingest_refused(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    stale = store.path / "core.tmp-deadbeef"
    (stale / "features.zarr").mkdir(parents=True)
    ingest(store, fasta, min_length=1000, show_progress=False)
    assert not stale.exists()
    with pytest.raises(ConflictError, match="already ingested"):
        ingest(store, fasta, show_progress=False)
    (store.path / "labels").mkdir()
    (store.path / "labels" / "x.parquet").write_bytes(b"")
    with pytest.raises(ConflictError, match="labels were made"):
        ingest(store, fasta, overwrite=True, show_progress=False)


def test_nothing_long_enough(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    with pytest.raises(BadInputError, match="no contig is at least 100000 bp"):
        ingest(store, fasta, min_length=100_000, show_progress=False)


# ----- CLI ------------------------------------------------------------------------------
def test_cli_ingest_creates_store(cli, tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    abundance = _write_abundance(tmp_path / "a.tsv", contigs, extra=["zz"])
    store = tmp_path / "new.tdstore"
    result = cli(
        "ingest", store, "--fasta", fasta, "--abundance", abundance, "--min-length", "1000"
    )
    assert result.exit_code == 0, result.stderr
    assert "ingested 3 contigs" in result.stdout and "1 shorter than 1000 bp" in result.stdout
    assert "1 rows for contigs not in the FASTA (e.g. zz)" in result.stdout
    assert (store / "core" / "core.json").exists()
    assert "samples: 2 with abundances: s1, s2; contigs name 2: S1, S2" in result.stdout
    info = cli("info", store, "--json")
    assert json.loads(info.stdout)["contigs"] == 3

    again = cli("ingest", store, "--fasta", fasta)
    assert again.exit_code == ConflictError.exit_code
    assert again.stderr.startswith("error: ") and "already ingested" in again.stderr


@pytest.mark.parametrize(
    "sample,line",
    [
        ("gut1", "none with abundances; contigs name 1: gut1"),
        (None, "none with abundances; contigs name 2: S1, S2"),  # from S{n}C{m} ids
    ],
)
def test_cli_samples_without_abundances_are_not_zero(cli, tmp_path, contigs, sample, line):
    """samples are abundance columns; contigs can still name theirs: say both, never '0'."""
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tmp_path / "s"
    extra = ("--sample", sample) if sample else ()
    result = cli("ingest", store, "--fasta", fasta, "--min-length", "1000", *extra)
    assert result.exit_code == 0, result.stderr
    assert f"samples: {line}\n" in result.stdout
    info = cli("info", store)
    assert f"samples    {line}\n" in info.stdout
    assert json.loads(cli("info", store, "--json").stdout)["samples"] == []


def test_cli_bad_fasta_exit_code(cli, tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">a\nACGT\n>a\nACGT\n")
    result = cli("ingest", tmp_path / "s", "--fasta", bad)
    assert result.exit_code == BadInputError.exit_code
    assert "duplicate contig id 'a'" in result.stderr
    assert not (tmp_path / "s" / "core").exists()


def test_overwrite_replaces_core_and_recovers_interrupted_swap(tmp_path, contigs):
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=1000, show_progress=False)
    assert store.n_contigs == 3
    ingest(store, fasta, min_length=100, overwrite=True, show_progress=False)
    assert store.n_contigs == 4 and tdstore.open(store.path).n_contigs == 4
    # Killed between "move old core aside" and "move new core in": the next ingest
    # restores the old core before it does anything else.
    (store.path / "core").rename(store.path / "core.tmp-old-12345678")
    with pytest.raises(ConflictError, match="already ingested"):
        ingest(store.path, fasta, show_progress=False)
    assert tdstore.open(store.path).n_contigs == 4
    assert not list(store.path.glob("core.tmp-*"))


def test_bad_record_late_in_file_leaves_store_unchanged(tmp_path, monkeypatch):
    import threading

    rng = np.random.default_rng(4)
    contigs = {f"c{i}": _random_seq(rng, 150) for i in range(12)}
    fasta = _write_fasta(tmp_path / "c.fa", contigs)
    with open(fasta, "a") as handle:
        handle.write(">c3\nACGTACGT\n")  # record 13 repeats an id, found in a later batch
    monkeypatch.setattr("tdstore.ingest.fasta._BATCH_CONTIGS", 2)
    store = tdstore.init(tmp_path / "s")
    before = _snapshot(store.path)
    with pytest.raises(BadInputError, match="record 13: duplicate contig id 'c3'"):
        ingest(store, fasta, min_length=100, show_progress=False)
    assert _snapshot(store.path) == before
    assert not [t for t in threading.enumerate() if t.name.startswith("tdstore-ingest")]


def test_all_n_contig_has_null_gc_and_all_n_assembly_is_refused(tmp_path):
    rng = np.random.default_rng(9)
    fasta = _write_fasta(tmp_path / "c.fa", {"gap": "N" * 300, "real": _random_seq(rng, 300)})
    store = tdstore.init(tmp_path / "s")
    ingest(store, fasta, min_length=100, show_progress=False)
    table = store.contigs().to_pydict()
    assert table["gc"][0] is None and table["n_count"][0] == 300
    assert 0 < table["gc"][1] < 1
    only_n = _write_fasta(tmp_path / "n.fa", {"gap": "N" * 300})
    with pytest.raises(BadInputError, match="every kept contig is only N"):
        ingest(tdstore.init(tmp_path / "s2"), only_n, min_length=100, show_progress=False)


def test_failed_ingest_into_a_new_path_leaves_no_store(cli, tmp_path):
    bad = tmp_path / "bad.fna"
    bad.write_text(">a\nACGT\n>a\nACGT\n")
    store = tmp_path / "new.tdstore"
    result = cli("ingest", store, "--fasta", bad, "--min-length", "1")
    assert result.exit_code == 3 and "duplicate" in result.stderr.lower()
    assert not store.exists()
