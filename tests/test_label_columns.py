"""The columnar label reader agrees with the line parser on every file it accepts, and
hands every file holding an error to the line parser (whose message names the line)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

import tdstore
import tdstore.labels as labels_module
from tdstore.ingest.label_columns import read_label_columns

KEPT = [f"S1C{i}" for i in range(40)]
SHORT = ["S1C90", "S1C91"]
NODES = [(1, 1, "no rank", "root"), (2, 1, "superkingdom", "Bacteria"),
         (10, 2, "phylum", "Pa"), (11, 10, "class", "Ca"), (12, 11, "order", "Oa"),
         (13, 12, "family", "Fa"), (14, 13, "genus", "Ga"), (15, 14, "species", "Ga x"),
         (16, 14, "species", "Ga y"), (17, 15, "strain", "Ga x 1"), (20, 2, "phylum", "Pb")]  # fmt: skip
LINEAGES = {  # taxid -> GTDB-style lineage
    10: "d__Bacteria;p__Pa",
    13: "d__Bacteria;p__Pa;c__Ca;o__Oa;f__Fa",
    15: "d__Bacteria;p__Pa;c__Ca;o__Oa;f__Fa;g__Ga;s__Ga x",
    16: "d__Bacteria;p__Pa;c__Ca;o__Oa;f__Fa;g__Ga;s__Ga y",
    20: "d__Bacteria;p__Pb",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tdstore.ingest.core import ingest

    root = tmp_path_factory.mktemp("columns")
    rng = random.Random(3)
    with (root / "c.fna").open("w") as handle:
        for cid in KEPT + SHORT:
            length = 2100 if cid in KEPT else 300
            handle.write(f">{cid}\n{''.join(rng.choice('ACGT') for _ in range(length))}\n")
    handle = tdstore.init(root / "s.tdstore")
    ingest(handle, root / "c.fna", min_length=2000, show_progress=False)
    folder = root / "taxdump"
    folder.mkdir()
    (folder / "nodes.dmp").write_text("".join(f"{t}\t|\t{p}\t|\t{r}\t|\n" for t, p, r, _ in NODES))
    (folder / "names.dmp").write_text(
        "".join(f"{t}\t|\t{n}\t|\t\t|\tscientific name\t|\n" for t, _, _, n in NODES)
    )
    return tdstore.open(handle.path), folder


def _both(store, path: Path, fmt: str, taxdump=None, monkeypatch=None):
    """(columnar result, line-parser result) of labels._collect, as comparable dicts."""
    fast = labels_module._collect(store, path, fmt, taxdump, None)
    monkeypatch.setattr(labels_module, "read_label_columns", lambda *a, **k: None)
    slow = labels_module._collect(store, path, fmt, taxdump, None)
    monkeypatch.undo()
    return _fields(fast), _fields(slow)


def _fields(collected) -> dict:
    return {
        name: list(value) if hasattr(value, "tolist") or isinstance(value, list) else value
        for name, value in vars(collected).items()
    }


def _rows(seed: int, fmt: str) -> list[str]:
    rng = random.Random(seed)
    ids = KEPT + SHORT + ["zz1", "zz2"]
    rng.shuffle(ids)
    rows = []
    for cid in ids[: rng.randint(5, len(ids))]:
        taxid = rng.choice([0, 10, 13, 15, 16, 17, 20])
        lineage = LINEAGES.get(17 if taxid == 17 else taxid, "")
        if taxid == 17:
            lineage = LINEAGES[15]
        pad = rng.choice(["", " "])
        if fmt == "taxometer":
            text = lineage if rng.random() < 0.5 else lineage.replace("__", "_")
            rows.append(f"{pad}{cid}{pad}\t{text}")
        elif fmt == "taxometer-gold":
            rows.append(f"{cid}\t{lineage}\t{rng.choice(['true', 'False', '', 'YES', '0'])}")
        elif fmt == "mmseqs2":
            mm = lineage.replace("__", "_")
            text = f"-_cellular organisms;{mm}" if mm and rng.random() < 0.5 else mm
            rows.append(f"{cid}\t{taxid}\tspecies\tname\t{text if taxid else 'unclassified'}")
        else:
            status = "C" if taxid else "U"
            shown = f"Some name {taxid} (taxid {taxid})" if rng.random() < 0.3 else str(taxid)
            rows.append(f"{status}\t{pad}{cid}\t{shown}\t2100\t{taxid}:10")
    return rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fmt", ["taxometer", "taxometer-gold", "mmseqs2", "kraken2"])
def test_columnar_and_line_readers_agree(store, tmp_path, monkeypatch, fmt, seed):
    handle, taxdump = store
    rows = _rows(seed, fmt)
    header = {
        "taxometer": ["contigs\tpredictions"],
        "taxometer-gold": ["contigs\tpredictions\tnovel"],
    }
    text = "\n".join(header.get(fmt, []) + rows) + "\n"
    if seed % 2:
        text = "\ufeff" + text.replace("\n", "\r\n")  # a BOM and CRLF line ends
    path = tmp_path / f"labels{seed}.tsv"
    if seed % 3 == 0:
        path = path.with_suffix(".tsv.gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    fmt = "taxometer" if fmt == "taxometer-gold" else fmt
    dump = taxdump if fmt == "kraken2" else None
    assert read_label_columns(path, fmt, taxdump=dump) is not None  # the fast path is taken
    fast, slow = _both(handle, path, fmt, dump, monkeypatch)
    assert fast == slow


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("taxometer", "contigs\tpredictions\nS1C0\td__A\nS1C0\td__A\n"),  # listed twice
        ("taxometer", "contigs\tpredictions\nS1C0\td__A\n\nS1C1\td__A\n"),  # a blank line
        ("taxometer", "contigs\tpredictions\nS1C0\td__A;c__B\n"),  # skipped rank
        ("taxometer", "contigs\tpredictions\tnovel\nS1C0\td__A\tmaybe\n"),  # bad flag
        ("taxometer", "contigs\tpredictions\nS1C0\n"),  # trailing field without its tab
        ("taxometer", "contigs\tpredictions\n\td__A\n"),  # empty id
        ("taxometer", "contigs\tpredictions\tscores\nS1C0\td__A\t1.0\n"),  # Taxometer output
        ("mmseqs2", "S1C0\t2\tspecies\tx\td_A\nS1C1\tx\tspecies\tx\td_A\n"),  # bad taxid
        ("mmseqs2", "S1C0\t2\tspecies\tx\t1;2;3\n"),  # --tax-lineage 2
        ("mmseqs2", "S1C0\t2\tspecies\tx\td_A\nS1C1\t0\tno rank\tunclassified\n"),  # 4 fields
        ("kraken2", "C\tS1C0\t15\t2100\t15:1\nC\tS1C1\t424242\t2100\t1:1\n"),  # unknown taxid
        ("kraken2", "C\tS1C0\tE. coli\t2100\t1:1\n"),  # a name without its taxid
        ("kraken2", "X\tS1C0\t15\t2100\t15:1\n"),  # bad status
        ("kraken2", "C\tS1C0\t15\t2100\n"),  # 4 columns
    ],
)
def test_files_with_errors_go_to_the_line_parser(store, tmp_path, fmt, text):
    _, taxdump = store
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    assert read_label_columns(path, fmt, taxdump=taxdump if fmt == "kraken2" else None) is None


def test_other_formats_and_empty_files_use_the_line_parser(store, tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("")
    assert read_label_columns(path, "taxometer") is None
    path.write_text("contigs\tpredictions\n")
    assert read_label_columns(path, "taxometer") is None
    for fmt in ("cami", "metabuli", "taxometer-output"):
        assert read_label_columns(path, fmt) is None
