"""vamb's abundance TSV: a ``contigname`` column, then one column per sample.

Rows may come in any order (vamb wants FASTA order); ingest aligns them to the kept
contigs by id::

    table = read_abundance("abundance.tsv")
    table.samples, table.values[table.index["S1C12"]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdstore.errors import BadInputError
from tdstore.ingest.files import require_regular_file

HEADER_FIRST = "contigname"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class AbundanceTable:
    path: Path
    samples: list[str]
    ids: list[str]
    values: np.ndarray  # (n_rows, n_samples) float32, file order
    index: dict[str, int] = field(repr=False)  # contig id -> row of values
    md5: str = ""
    size: int = 0


def read_abundance(path: Path | str) -> AbundanceTable:
    """Parse and validate the whole file; errors name the file and the line."""
    import hashlib

    path = Path(path)
    require_regular_file(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        try:
            text_bytes = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise BadInputError(f"{path}: cannot decompress ({exc})") from None
    else:
        text_bytes = raw
    # A UTF-8 byte order mark (spreadsheet exports) is not part of 'contigname'.
    text_bytes = text_bytes.removeprefix(b"\xef\xbb\xbf")
    parsed = _read_fast(text_bytes) or _read_lines(path, text_bytes)
    samples, ids, values, index = parsed
    return AbundanceTable(
        path=path,
        samples=samples,
        ids=ids,
        values=values,
        index=index,
        md5=hashlib.md5(raw).hexdigest(),
        size=len(raw),
    )


_Parsed = tuple[list[str], list[str], np.ndarray, dict[str, int]]


def _read_lines(path: Path, text_bytes: bytes) -> _Parsed:
    """Line by line: the reference reader; its errors name the line."""
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not a text file (binary data)") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BadInputError(f"{path}: empty file; expected a header line 'contigname<TAB>...'")
    samples = _header(path, lines[0])
    n_cols = len(samples) + 1
    # Trailing empty lines are tolerated (as vamb does); an empty line in the middle is not.
    end = len(lines)
    while end > 1 and not lines[end - 1].strip():
        end -= 1
    ids: list[str] = []
    index: dict[str, int] = {}
    values = np.empty((end - 1, len(samples)), dtype=np.float32)
    for lineno in range(2, end + 1):
        fields = lines[lineno - 1].split("\t")
        if len(fields) != n_cols:
            raise BadInputError(
                f"{path}: line {lineno}: expected {n_cols} tab-separated columns "
                f"(contigname + {len(samples)} samples), found {len(fields)}"
            )
        contig_id = fields[0].strip()
        if not contig_id:
            raise BadInputError(f"{path}: line {lineno}: empty contig name")
        if contig_id in index:
            raise BadInputError(f"{path}: line {lineno}: contig {contig_id!r} appears twice")
        row = len(ids)
        index[contig_id] = row
        ids.append(contig_id)
        for col, text_value in enumerate(fields[1:]):
            values[row, col] = _number(path, lineno, samples[col], text_value)
    return samples, ids, values, index


# Bytes str.splitlines() treats as line ends besides \n and \r (the fast reader does not).
_ODD_LINE_ENDS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")


def _read_fast(text: bytes) -> _Parsed | None:
    """Arrow's multi-threaded CSV reader for a file the line-by-line reader would accept.

    Returns None whenever it cannot vouch for that (any parse error, a value out of range,
    an empty line in the middle, odd line ends, ...): the line-by-line reader then accepts
    the file the same way or names the line at fault. Values are parsed as float64 and
    rounded to float32, as the line-by-line reader does.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    first_end = text.find(b"\n")
    body = text.rstrip(b"\r\n")
    if (
        first_end < 0
        or not text.isascii()
        or b"\n\n" in body
        or b"\n\r\n" in body
        or text.count(b"\r") != text.count(b"\r\n")
        or any(odd in text for odd in _ODD_LINE_ENDS)
    ):
        return None
    header = text[:first_end].decode("ascii").rstrip("\r").split("\t")
    samples = [c.strip() for c in header[1:]]
    if (
        header[0].strip() != HEADER_FIRST
        or not samples
        or any(not s for s in samples)
        or len(set(samples)) != len(samples)
    ):
        return None
    names = ["contigname", *(f"s{i}" for i in range(len(samples)))]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=names),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={
                    n: pa.string() if i == 0 else pa.float64() for i, n in enumerate(names)
                },
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    values = np.column_stack(
        [table.column(f"s{i}").to_numpy() for i in range(len(samples))]
    ).reshape(table.num_rows, len(samples))
    with np.errstate(invalid="ignore"):
        if not (
            np.isfinite(values).all() and (values >= 0).all() and (values <= _FLOAT32_MAX).all()
        ):
            return None
    ids = table.column("contigname").to_pylist()
    index = {cid: row for row, cid in enumerate(ids)}
    if len(index) != len(ids) or any(not cid or cid != cid.strip() for cid in ids):
        return None
    return samples, ids, values.astype(np.float32), index


def _header(path: Path, line: str) -> list[str]:
    columns = line.rstrip("\r").split("\t")
    if columns[0].strip() != HEADER_FIRST:
        raise BadInputError(
            f"{path}: line 1: header must start with {HEADER_FIRST!r} (vamb's abundance TSV), "
            f"found {columns[0][:40]!r}"
        )
    samples = [c.strip() for c in columns[1:]]
    if not samples:
        raise BadInputError(f"{path}: line 1: no sample columns after {HEADER_FIRST!r}")
    if any(not s for s in samples):
        raise BadInputError(f"{path}: line 1: empty sample name in the header")
    if len(set(samples)) != len(samples):
        dup = next(s for s in samples if samples.count(s) > 1)
        raise BadInputError(f"{path}: line 1: sample {dup!r} appears twice in the header")
    return samples


def _number(path: Path, lineno: int, sample: str, text: str) -> float:
    try:
        # Python's float() takes digit separators ('1_000'); no TSV writer means them so.
        if "_" in text:
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise BadInputError(
            f"{path}: line {lineno}: sample {sample!r}: {text.strip()[:40]!r} is not a number"
        ) from None
    if not math.isfinite(value) or value > _FLOAT32_MAX:
        raise BadInputError(
            f"{path}: line {lineno}: sample {sample!r}: {text.strip()} is not finite (or too large for float32)"
        )
    if value < 0:
        raise BadInputError(f"{path}: line {lineno}: sample {sample!r}: negative abundance {value}")
    return value
