"""The bad-input corpus (tests/data/bad/): every case through the CLI.

Each case must give ONE line ``error: ...`` naming the file and the place (line,
record, contig, chunk), the documented exit code (tdstore.errors.EXIT_CODES), and leave
the store byte-identical (every file hashed before and after; lock files aside). Inputs
that look odd but are valid (CRLF, lower case) must work.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from crashkit import raw_digests, tiny_model

import tdstore
from tdstore.errors import EXIT_CODES

BAD = Path(__file__).parent / "data" / "bad"
MIN = "100"  # the corpus contigs are 310-360 bp


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {store}, {bad}, {model} are filled in
    code: int
    where: tuple[str, ...]  # the error line must contain each (file, place)
    store: str = "base"  # "empty" (initialised), "base" (ingested, labels, kmer4)
    mutate: Callable[[Path], None] | None = None
    model: str | None = None  # a model directory variant (built with tdstore.teacher.testing)


def _ingest(fasta: str, abundance: str | None = None) -> tuple[str, ...]:
    extra = ("--abundance", f"{{bad}}/{abundance}") if abundance else ()
    return ("ingest", "{store}", "--fasta", f"{{bad}}/{fasta}", "--min-length", MIN, *extra)


def _labels(file: str, fmt: str = "taxometer", name: str = "new") -> tuple[str, ...]:
    extra = ("--taxdump", "{bad}/taxdump") if fmt == "cami" else ()
    return ("labels", "import", "{store}", name, f"{{bad}}/{file}", "-f", fmt, *extra)


# ----- store mutations -------------------------------------------------------------------------
def _truncate(rel: str) -> Callable[[Path], None]:
    def mutate(store: Path) -> None:
        path = store / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return mutate


def _newer_manifest(store: Path) -> None:
    doc = json.loads((store / "manifest.json").read_text())
    doc["schema_version"] = 99
    (store / "manifest.json").write_text(json.dumps(doc))


def _drop_tnf_chunk(store: Path) -> None:
    (store / "core/features.zarr/tnf/c/0/0").unlink()


def _flip_embedding_chunk(store: Path) -> None:
    chunk = sorted((store / "embeddings/kmer4.zarr/vectors/c").rglob("*"))
    chunk = [p for p in chunk if p.is_file()][0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x40
    chunk.write_bytes(bytes(data))


def _rewrite_sequence(store: Path) -> None:
    """One base of row 2 changed; the file rewritten with its schema tag (a silent corruption)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = store / "core" / "sequences.parquet"
    table = pq.read_table(path)
    sequences = table.column("sequence").to_pylist()
    sequences[2] = ("A" if sequences[2][0] != "A" else "C") + sequences[2][1:]
    column = pa.array(sequences, table.schema.field("sequence").type)
    pq.write_table(table.set_column(1, table.schema.field("sequence"), column), path)


def _foreign_label_set(store: Path) -> None:
    # The label set of another store (other contigs): its refhash differs.
    shutil.copy(store.parent / "other-labels.parquet", store / "labels" / "mmseqs.parquet")


def _broken_core_json(store: Path) -> None:
    (store / "core" / "core.json").write_text('{"schema": "tdstore.core", ')


CASES = [
    # --- FASTA ---------------------------------------------------------------------------------
    Case("fasta-empty", _ingest("fasta_empty.fna"), 3, ("fasta_empty.fna", "empty"), "empty"),
    Case(
        "fasta-no-header",
        _ingest("fasta_no_header.fna"),
        3,
        ("fasta_no_header.fna", "at the start"),
        "empty",
    ),
    Case("fasta-binary", _ingest("fasta_binary.fna"), 3, ("fasta_binary.fna", "record 1"), "empty"),
    Case(
        "fasta-duplicate-ids",
        _ingest("fasta_duplicate_ids.fna"),
        3,
        ("fasta_duplicate_ids.fna", "record 4", "'c2'"),
        "empty",
    ),
    Case("fasta-only-ns", _ingest("fasta_only_ns.fna"), 3, ("fasta_only_ns.fna", "'c1'"), "empty"),
    Case("fasta-fastq", _ingest("fasta_fastq.fq"), 3, ("fasta_fastq.fq", "record 1"), "empty"),
    Case(
        "fasta-empty-record",
        _ingest("fasta_empty_record.fna"),
        3,
        ("fasta_empty_record.fna", "record 3", "'c3'"),
        "empty",
    ),
    Case(
        "fasta-bad-char",
        _ingest("fasta_bad_char.fna"),
        3,
        ("fasta_bad_char.fna", "record 3", "'1'"),
        "empty",
    ),
    Case(
        "fasta-empty-header",
        _ingest("fasta_empty_header.fna"),
        3,
        ("fasta_empty_header.fna", "record 2"),
        "empty",
    ),
    Case(
        "fasta-truncated-gzip",
        _ingest("fasta_truncated.fna.gz"),
        3,
        ("fasta_truncated.fna.gz", "damaged"),
        "empty",
    ),
    Case(
        "fasta-all-short",
        _ingest("fasta_all_short.fna"),
        3,
        ("fasta_all_short.fna", "6 contigs"),
        "empty",
    ),
    Case("fasta-missing", _ingest("no_such.fna"), 3, ("no_such.fna", "no such file"), "empty"),
    Case(
        "fasta-protein",
        _ingest("fasta_protein.fna"),
        3,
        ("fasta_protein.fna", "mostly non-nucleotide letters", "protein FASTA?"),
        "empty",
    ),
    Case(
        "fasta-rna",
        _ingest("fasta_rna.fna"),
        3,
        ("fasta_rna.fna", "mostly non-nucleotide letters", "'U'", "RNA FASTA"),
        "empty",
    ),
    Case(
        "fasta-header-not-utf8",
        _ingest("fasta_header_not_utf8.fna"),
        3,
        ("fasta_header_not_utf8.fna", "record 2", "header is not UTF-8"),
        "empty",
    ),
    Case(
        "fasta-is-a-directory",
        ("ingest", "{store}", "--fasta", "{bad}/taxdump", "--min-length", MIN),
        3,
        ("taxdump", "is a directory"),
        "empty",
    ),
    # A store path naming a file: every command says so alike (exit 4, as info always did).
    Case("init-on-a-file", ("init", "{bad}/good.fna"), 4, ("good.fna", "is not a directory")),
    Case(
        "ingest-into-a-file",
        ("ingest", "{bad}/good.fna", "--fasta", "{bad}/good.fna", "--min-length", MIN),
        4,
        ("good.fna", "is not a directory"),
    ),
    Case("info-on-a-file", ("info", "{bad}/good.fna"), 4, ("good.fna", "is not a directory")),
    Case("ingest-twice", _ingest("good.fna"), 6, ("already ingested",)),
    # --- abundance -----------------------------------------------------------------------------
    Case(
        "abundance-missing-contigs",
        _ingest("good.fna", "ab_missing_contigs.tsv"),
        3,
        ("ab_missing_contigs.tsv", "c5"),
        "empty",
    ),
    Case(
        "abundance-non-numeric",
        _ingest("good.fna", "ab_non_numeric.tsv"),
        3,
        ("ab_non_numeric.tsv", "line 4", "'abc'"),
        "empty",
    ),
    Case(
        "abundance-negative",
        _ingest("good.fna", "ab_negative.tsv"),
        3,
        ("ab_negative.tsv", "line 3"),
        "empty",
    ),
    Case("abundance-nan", _ingest("good.fna", "ab_nan.tsv"), 3, ("ab_nan.tsv", "line 5"), "empty"),
    Case(
        "abundance-digit-separator",
        _ingest("good.fna", "ab_underscore.tsv"),
        3,
        ("ab_underscore.tsv", "line 4", "'3_500' is not a number"),
        "empty",
    ),
    Case(
        "abundance-wrong-header",
        _ingest("good.fna", "ab_wrong_header.tsv"),
        3,
        ("ab_wrong_header.tsv", "line 1", "contigname"),
        "empty",
    ),
    Case(
        "abundance-wrong-columns",
        _ingest("good.fna", "ab_wrong_columns.tsv"),
        3,
        ("ab_wrong_columns.tsv", "line 5"),
        "empty",
    ),
    Case(
        "abundance-duplicate",
        _ingest("good.fna", "ab_duplicate.tsv"),
        3,
        ("ab_duplicate.tsv", "line 8", "'c2'"),
        "empty",
    ),
    Case(
        "abundance-empty",
        _ingest("good.fna", "ab_empty.tsv"),
        3,
        ("ab_empty.tsv", "empty"),
        "empty",
    ),
    # --- labels ----------------------------------------------------------------------------------
    Case(
        "labels-skipped-rank",
        _labels("labels_skipped_rank.tsv"),
        3,
        ("labels_skipped_rank.tsv:3", "skipped rank"),
    ),
    Case(
        "labels-two-parents",
        _labels("labels_two_parents.tsv"),
        3,
        ("labels_two_parents.tsv:3", "two parents"),
    ),
    Case(
        "labels-parent-differs-from-store",
        _labels("labels_conflicts_store.tsv"),
        3,
        ("labels_conflicts_store.tsv:2", "two parents"),
    ),
    Case(
        "labels-all-unknown-contigs",
        _labels("labels_unknown_contigs.tsv"),
        3,
        ("labels_unknown_contigs.tsv", "x1"),
    ),
    Case(
        "labels-wrong-column-count",
        _labels("labels_wrong_columns.tsv"),
        3,
        ("labels_wrong_columns.tsv:3", "found 4"),
    ),
    Case(
        "labels-taxometer-output",
        _labels("labels_taxometer_output.tsv"),
        3,
        ("labels_taxometer_output.tsv:1", "OUTPUT"),
    ),
    Case(
        "labels-duplicate-contig",
        _labels("labels_duplicate_contig.tsv"),
        3,
        ("labels_duplicate_contig.tsv:4", "'c1'"),
    ),
    Case("labels-not-utf8", _labels("labels_not_utf8.tsv"), 3, ("labels_not_utf8.tsv:2",)),
    Case("labels-bad-novel", _labels("labels_bad_novel.tsv"), 3, ("labels_bad_novel.tsv:2",)),
    Case("labels-no-rows", _labels("labels_empty.tsv"), 3, ("labels_empty.tsv", "no label rows")),
    Case(
        "labels-mmseqs-as-taxometer",
        _labels("mmseqs_as_taxometer.tsv"),
        3,
        ("mmseqs_as_taxometer.tsv:1", "--format mmseqs2"),
    ),
    Case(
        "labels-taxometer-as-mmseqs",
        _labels("labels_good.tsv", "mmseqs2"),
        3,
        ("labels_good.tsv:1", "--format taxometer"),
    ),
    Case(
        "labels-mmseqs-taxids",
        _labels("mmseqs_taxids.tsv", "mmseqs2"),
        3,
        ("mmseqs_taxids.tsv:1", "--tax-lineage 1"),
    ),
    Case("labels-exists", _labels("labels_good.tsv", name="mmseqs"), 6, ("mmseqs", "--overwrite")),
    Case("labels-unknown-format", _labels("labels_good.tsv", "kraken"), 2, ("kraken",)),
    # --- gold standards ----------------------------------------------------------------------
    Case(
        "cami-no-column-line",
        _labels("cami_no_columns_line.binning", "cami"),
        3,
        ("cami_no_columns_line.binning:3", "@@SEQUENCEID"),
    ),
    Case(
        "cami-taxid-not-in-dump",
        _labels("cami_unknown_taxid.binning", "cami"),
        3,
        ("cami_unknown_taxid.binning:5", "999999", "nodes.dmp"),
    ),
    Case(
        "cami-without-taxdump",
        ("labels", "import", "{store}", "gold", "{bad}/cami_good.binning", "-f", "cami"),
        2,
        ("--taxdump",),
    ),
    # --- model directories ---------------------------------------------------------------------
    Case(
        "model-missing-tokenizer",
        ("embed", "{store}", "--model", "{model}"),
        7,
        ("no-tokenizer", "tokenizer"),
        model="no-tokenizer",
    ),
    Case(
        "model-vocabulary-mismatch",
        ("embed", "{store}", "--model", "{model}"),
        7,
        ("vocab-mismatch", "64 tokens", "32 embeddings"),
        model="vocab-mismatch",
    ),
    Case(
        "model-no-weights",
        ("embed", "{store}", "--model", "{model}"),
        7,
        ("no-weights", "no weight files"),
        model="no-weights",
    ),
    Case(
        "model-not-a-directory",
        ("embed", "{store}", "--model", "{bad}/good.fna"),
        7,
        ("good.fna", "not a model directory"),
    ),
    # --- stores ----------------------------------------------------------------------------------
    Case(
        "store-truncated-parquet",
        _labels("labels_good.tsv"),
        5,
        ("core/contigs.parquet", "not a readable Parquet"),
        mutate=_truncate("core/contigs.parquet"),
    ),
    Case(
        "store-truncated-label-set",
        ("labels", "show", "{store}", "mmseqs"),
        5,
        ("labels/mmseqs.parquet",),
        mutate=_truncate("labels/mmseqs.parquet"),
    ),
    Case(
        "store-newer-manifest",
        ("info", "{store}"),
        5,
        ("manifest.json", "version 99 is newer"),
        mutate=_newer_manifest,
    ),
    Case(
        "store-label-set-refhash-mismatch",
        ("labels", "show", "{store}", "mmseqs"),
        6,
        ("labels/mmseqs.parquet", "other store content"),
        mutate=_foreign_label_set,
    ),
    Case(
        "store-broken-core-json",
        ("info", "{store}"),
        5,
        ("core/core.json", "unreadable JSON"),
        mutate=_broken_core_json,
    ),
    Case("store-not-a-store", ("info", "{bad}"), 4, ("data/bad", "not a tdstore store")),
    Case(
        "store-no-label-set",
        ("labels", "show", "{store}", "nope"),
        4,
        ("no label set 'nope'", "mmseqs"),
    ),
    Case("embed-before-ingest", ("embed", "{store}", "--model", "kmer:4"), 4, ("ingest",), "empty"),
    # --- names and options -----------------------------------------------------------------------
    Case("name-dot-dot", _labels("labels_good.tsv", name="../x"), 2, ("'../x'",)),
    Case("name-absolute", _labels("labels_good.tsv", name="/tmp/x"), 2, ("'/tmp/x'",)),
    Case("name-slash", _labels("labels_good.tsv", name="a/b"), 2, ("'a/b'",)),
    Case(
        "embed-bad-shard", ("embed", "{store}", "--model", "kmer:4", "--shard", "3/2"), 2, ("3/2",)
    ),
    Case("embed-bad-kmer", ("embed", "{store}", "--model", "kmer:9"), 2, ("kmer",)),
    # --device: checked before any work by every command that runs torch
    Case(
        "embed-bad-device",
        ("embed", "{store}", "--model", "kmer:4", "--device", "gpu"),
        2,
        ("--device 'gpu'", "cpu, cuda, cuda:N", "auto"),
    ),
    Case(
        "teach-bad-device",
        ("teach", "{store}", "--embeddings", "kmer4", "--labels", "mmseqs", "--device", "gpu"),
        2,
        ("--device 'gpu'", "cpu, cuda, cuda:N"),
    ),
    Case(
        "train-bad-device",
        ("train", "{store}", "--labels", "mmseqs", "--device", "cuda:zero"),
        2,
        ("--device 'cuda:zero'", "cpu, cuda, cuda:N"),
    ),
]

# `tdstore check` reports every problem on its own line, then one error line.
CHECK_CASES = [
    Case(
        "check-corrupt-sequence",
        ("check", "{store}", "--deep"),
        5,
        ("core/sequences.parquet", "row 2 (c3)", "corrupt"),
        mutate=_rewrite_sequence,
    ),
    Case(
        "check-missing-zarr-chunk",
        ("check", "{store}", "--deep"),
        5,
        ("core/features.zarr/tnf", "chunk 0", "missing"),
        mutate=_drop_tnf_chunk,
    ),
    Case(
        "check-corrupt-embedding-chunk",
        ("check", "{store}", "--deep"),
        5,
        ("embeddings/kmer4.zarr", "shard 0", "corrupt"),
        mutate=_flip_embedding_chunk,
    ),
    Case(
        "check-truncated-parquet",
        ("check", "{store}"),
        5,
        ("labels/mmseqs.parquet", "not a readable Parquet"),
        mutate=_truncate("labels/mmseqs.parquet"),
    ),
    Case(
        "check-refhash-mismatch",
        ("check", "{store}"),
        5,
        ("labels/mmseqs.parquet", "other store content"),
        mutate=_foreign_label_set,
    ),
]


def _cli(*args: str) -> int:
    from tdstore.cli.main import main

    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Templates: an initialised empty store and an ingested one (labels + kmer4)."""
    root = tmp_path_factory.mktemp("bad")
    empty = tdstore.init(root / "empty").path
    base = root / "base"
    assert _cli(*_fill(_ingest("good.fna", "good_abundance.tsv"), base)) == 0
    assert _cli(*_fill(_labels("labels_good.tsv", name="mmseqs"), base)) == 0
    assert _cli("embed", base, "--model", "kmer:4") == 0
    other = root / "other"
    assert _cli("ingest", other, "--fasta", BAD / "fasta_lowercase.fna", "--min-length", "335") == 0
    assert _cli(*_fill(_labels("labels_good.tsv", name="mmseqs"), other)) == 0
    shutil.copy(other / "labels" / "mmseqs.parquet", root / "other-labels.parquet")
    return {"empty": empty, "base": base, "root": root}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    good = tiny_model(tmp_path_factory)
    no_tokenizer = shutil.copytree(good, root / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    # A tokenizer with more tokens than the model has embeddings (other checkpoint's).
    mismatch = shutil.copytree(good, root / "vocab-mismatch")
    config = json.loads((mismatch / "config.json").read_text())
    config["vocab_size"] = 32
    (mismatch / "config.json").write_text(json.dumps(config))
    no_weights = shutil.copytree(good, root / "no-weights")
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    return root


def _fill(argv: tuple[str, ...], store: Path, model: Path | None = None) -> list[str]:
    values = {"{store}": str(store), "{bad}": str(BAD), "{model}": str(model)}
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _prepare(case: Case, stores, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    shutil.copytree(stores[case.store], store)
    if case.mutate is not None:
        shutil.copy(stores["root"] / "other-labels.parquet", tmp_path / "other-labels.parquet")
        case.mutate(store)
    return store


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")  # no progress lines around the error line


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, stores, cli, tmp_path, request):
    store = _prepare(case, stores, tmp_path)
    model = request.getfixturevalue("models") / case.model if case.model else None
    before = raw_digests(store)
    result = cli(*_fill(case.argv, store, model))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == case.code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in case.where:
        assert text in lines[0], (text, lines[0])
    assert raw_digests(store) == before, "the store changed"


@pytest.mark.parametrize("case", CHECK_CASES, ids=lambda c: c.id)
def test_check_names_damage(case, stores, cli, tmp_path):
    store = _prepare(case, stores, tmp_path)
    before = raw_digests(store)
    result = cli(*_fill(case.argv, store))
    assert result.exit_code == case.code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"error: {store}: {len(lines) - 1} problem(s) found"
    problems = [line for line in lines[:-1] if all(text in line for text in case.where)]
    assert problems and all(line.startswith("problem: ") for line in lines[:-1]), result.stderr
    assert raw_digests(store) == before


@pytest.mark.parametrize("mutate", [_rewrite_sequence, _flip_embedding_chunk, _drop_tnf_chunk])
def test_deep_damage_needs_deep_check(mutate, stores, cli, tmp_path):
    """Damage inside values passes the shallow check (tags, shapes) and fails --deep."""
    store = tmp_path / "store"
    shutil.copytree(stores["base"], store)
    mutate(store)
    assert cli("check", store).exit_code == 0
    assert cli("check", store, "--deep").exit_code == 5


def test_corpus_is_large_enough():
    files = [p for p in BAD.rglob("*") if p.is_file() and p.name != "README.md"]
    assert len(files) >= 30 and len(CASES) + len(CHECK_CASES) >= 30
    assert {c.code for c in CASES + CHECK_CASES} >= {2, 3, 4, 5, 6, 7}


def test_every_exit_code_is_documented(cli):
    codes = {c.code for c in CASES + CHECK_CASES}
    assert codes <= set(EXIT_CODES)
    result = cli("exit-codes")
    assert result.exit_code == 0
    for code in codes:
        assert f"{code:>4}  {EXIT_CODES[code]}" in result.stdout


@pytest.mark.parametrize("variant", ["fasta_crlf.fna", "fasta_lowercase.fna"])
def test_crlf_and_lowercase_fasta_work(variant, stores, cli, tmp_path):
    """Same contigs as good.fna: same ids, lengths, md5s, refhash and TNF."""
    store = tmp_path / "s"
    result = cli(*_fill(_ingest(variant, "good_abundance.tsv"), store))
    assert result.exit_code == 0, result.stderr
    got, want = tdstore.open(store), tdstore.open(stores["base"])
    assert got.refhash == want.refhash
    columns = ["contig_id", "length", "gc", "n_count", "seq_md5"]
    assert got.contigs(columns=columns).equals(want.contigs(columns=columns))
    np.testing.assert_array_equal(got.tnf()[:], want.tnf()[:])
    assert [s for _, s in got.iter_sequences()] == [s for _, s in want.iter_sequences()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "s.tdstore"], "error: Missing option '--model'."),
        (
            ["train", "s.tdstore", "--labels", "x", "--epochs", "abc"],
            "error: Invalid value for '--epochs'",
        ),
        (["train", "s.tdstore", "--nope"], "error: No such option: --nope"),
        (["nosuch"], "error: No such command 'nosuch'."),
    ],
)
def test_usage_errors_are_one_line(cli, args, message):
    """click would draw a box; SLURM logs and pipelines read one line better."""
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "--help`)" in result.stderr
