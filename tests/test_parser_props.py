"""Property tests (hypothesis) for the FASTA and abundance readers.

Random valid files (wrapping, CRLF, lower case, gzip, descriptions) read back exactly;
random corruptions raise BadInputError naming the file (and the line for TSVs); random
bytes raise nothing but BadInputError.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tdstore.errors import BadInputError
from tdstore.ingest.abundance import read_abundance
from tdstore.ingest.fasta import read_fasta_batches

SETTINGS = settings(
    max_examples=int(os.environ.get("TDSTORE_HYPOTHESIS_EXAMPLES", 60)) // 2 or 1,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

IDS = st.text("ABCXYZabcxyz0123456789_.|-", min_size=1, max_size=10)
SEQS = st.text("ACGTNacgtnRYKM", min_size=1, max_size=300)
DESCRIPTION = st.text("abc xyz=0123", max_size=12)
RECORDS = st.lists(
    st.tuples(IDS, SEQS, DESCRIPTION), min_size=1, max_size=12, unique_by=lambda r: r[0]
)


def _write(folder: Path, data: bytes, suffix: str) -> Path:
    """A new file per example (tmp_path is shared by all examples of a test)."""
    path = folder / f"{uuid.uuid4().hex[:12]}{suffix}"
    path.write_bytes(data)
    return path


def _fasta_text(records, width: int, newline: str) -> str:  # type: ignore[no-untyped-def]
    out = []
    for cid, seq, description in records:
        out.append(f">{cid} {description}".rstrip() + newline)
        out += [seq[i : i + width] + newline for i in range(0, len(seq), width)]
    return "".join(out)


def _read_all(path: Path, batch_contigs: int) -> tuple[list[str], bytes, list[str], np.ndarray]:
    ids: list[str] = []
    data = b""
    md5: list[str] = []
    gc = []
    for batch in read_fasta_batches(path, batch_contigs=batch_contigs):
        ids += batch.ids
        data += batch.data
        md5 += batch.md5
        gc.append(batch.gc)
    return ids, data, md5, np.concatenate(gc)


@SETTINGS
@given(
    records=RECORDS,
    width=st.integers(1, 80),
    newline=st.sampled_from(["\n", "\r\n"]),
    gzipped=st.booleans(),
    batch_contigs=st.integers(1, 5),
)
def test_fasta_round_trip(tmp_path, records, width, newline, gzipped, batch_contigs):
    raw = _fasta_text(records, width, newline).encode()
    path = _write(
        tmp_path, gzip.compress(raw) if gzipped else raw, ".fna.gz" if gzipped else ".fna"
    )
    ids, data, md5, gc = _read_all(path, batch_contigs)
    upper = [seq.upper() for _, seq, _ in records]
    assert ids == [cid for cid, _, _ in records]
    assert data == "".join(upper).encode()
    assert md5 == [hashlib.md5(s.encode()).hexdigest() for s in upper]
    for value, seq in zip(gc.tolist(), upper, strict=True):
        acgt = sum(seq.count(b) for b in "ACGT")
        if acgt:
            assert abs(value - (seq.count("G") + seq.count("C")) / acgt) < 1e-6
        else:
            assert np.isnan(value)


CORRUPTIONS = ["nul", "non_ascii", "digit", "duplicate", "empty_record", "no_header", "empty_id"]


@SETTINGS
@given(records=RECORDS, how=st.sampled_from(CORRUPTIONS), where=st.integers(0, 10**6))
def test_fasta_corruption_names_the_file(tmp_path, records, how, where):
    records = [list(r) for r in records]
    victim = records[where % len(records)]
    if how == "nul":
        victim[1] = victim[1][:1] + "\x00" + victim[1][1:]
    elif how == "non_ascii":
        victim[1] = victim[1][:1] + "é" + victim[1][1:]
    elif how == "digit":
        victim[1] = victim[1] + "7"
    elif how == "duplicate":
        records.append([victim[0], "ACGT", ""])
    elif how == "empty_record":
        victim[1] = ""
    elif how == "empty_id":
        victim[0], victim[2] = "", ""
    text = _fasta_text(records, 60, "\n")
    if how == "no_header":
        text = text.split("\n", 1)[1] if "\n" in text else "ACGT\n"
        assume(not text.startswith(">") and text.strip())
    path = _write(tmp_path, text.encode(), ".fna")
    try:
        _read_all(path, 3)
    except BadInputError as exc:
        assert str(path) in str(exc)
        return
    raise AssertionError(f"{how}: accepted")


@SETTINGS
@given(data=st.binary(max_size=400))
def test_fasta_random_bytes_only_bad_input(tmp_path, data):
    path = _write(tmp_path, data, ".fna")
    try:
        _read_all(path, 4)
    except BadInputError as exc:
        assert str(path) in str(exc)


# ----- abundance ---------------------------------------------------------------------------------
SAMPLES = st.lists(
    st.text("S0123456789_ab", min_size=1, max_size=6), min_size=1, max_size=4, unique=True
)
VALUES = st.floats(0, 1e6, allow_nan=False, width=32)


def _abundance_text(samples, rows, newline: str) -> str:  # type: ignore[no-untyped-def]
    lines = ["contigname\t" + "\t".join(samples)]
    lines += [cid + "\t" + "\t".join(repr(float(v)) for v in values) for cid, values in rows]
    return newline.join(lines) + newline


@st.composite
def tables(draw):  # type: ignore[no-untyped-def]
    samples = draw(SAMPLES)
    ids = draw(st.lists(IDS, min_size=1, max_size=10, unique=True))
    rows = [
        (cid, draw(st.lists(VALUES, min_size=len(samples), max_size=len(samples)))) for cid in ids
    ]
    return samples, rows


@SETTINGS
@given(table=tables(), newline=st.sampled_from(["\n", "\r\n"]), gzipped=st.booleans())
def test_abundance_round_trip(tmp_path, table, newline, gzipped):
    samples, rows = table
    raw = _abundance_text(samples, rows, newline).encode()
    path = _write(tmp_path, gzip.compress(raw) if gzipped else raw, ".tsv")
    got = read_abundance(path)
    assert got.samples == samples
    assert got.ids == [cid for cid, _ in rows]
    want = np.asarray([values for _, values in rows], dtype=np.float32)
    np.testing.assert_array_equal(got.values, want)
    assert all(got.index[cid] == i for i, (cid, _) in enumerate(rows))


@SETTINGS
@given(
    table=tables(),
    how=st.sampled_from(["text", "negative", "nan", "inf", "missing_cell", "duplicate_id"]),
    where=st.integers(0, 10**6),
)
def test_abundance_corruption_names_file_and_line(tmp_path, table, how, where):
    samples, rows = table
    lines = _abundance_text(samples, rows, "\n").splitlines()
    row = 1 + where % len(rows)  # 0 is the header
    fields = lines[row].split("\t")
    col = 1 + where % len(samples)
    if how == "text":
        fields[col] = "1.2.3"
    elif how == "negative":
        fields[col] = "-0.5"
    elif how in ("nan", "inf"):
        fields[col] = how
    elif how == "missing_cell":
        fields.pop(col)
    else:
        assume(len(rows) > 1)
        fields[0] = rows[(row % len(rows))][0]  # the next row's id
    lines[row] = "\t".join(fields)
    path = _write(tmp_path, ("\n".join(lines) + "\n").encode(), ".tsv")
    try:
        read_abundance(path)
    except BadInputError as exc:
        assert str(path) in str(exc)
        # The duplicate is reported on whichever of the two lines comes second.
        if how != "duplicate_id":
            assert f"line {row + 1}:" in str(exc), str(exc)
        return
    raise AssertionError(f"{how}: accepted")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_abundance_random_bytes_only_bad_input(tmp_path, data):
    path = _write(tmp_path, b"contigname\tS1\n" + data, ".tsv")
    try:
        read_abundance(path)
    except BadInputError as exc:
        assert str(path) in str(exc)
