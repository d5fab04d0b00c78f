"""The simulator's output files, each in the exact format the real tool writes.

Every file is published atomically (temporary then rename) and written
deterministically (gzip without a timestamp), so one seed gives identical bytes::

    write_fasta(out / "contigs.fna.gz", genomes, contigs)
    write_taxdump(out / "taxdump", tree)
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tdstore.atomic import atomic_path
from tdstore.progress import Progress
from tdstore.simulate.sampling import Contigs
from tdstore.simulate.tree import NCBI_RANKS, Tree

LINE_WIDTH = 80
_ASCII = np.frombuffer(b"ACGT", dtype=np.uint8)
_ASCII_RC = np.frombuffer(b"TGCA", dtype=np.uint8)
_FLUSH_BYTES = 1 << 24


def _wrap(seq: np.ndarray) -> bytes:
    """ASCII sequence -> FASTA body with 80-column lines, each ending in a newline."""
    n = len(seq)
    full = n // LINE_WIDTH
    rest = n - full * LINE_WIDTH
    out = np.empty(n + full + (1 if rest else 0), dtype=np.uint8)
    grid = out[: full * (LINE_WIDTH + 1)].reshape(full, LINE_WIDTH + 1)
    grid[:, :LINE_WIDTH] = seq[: full * LINE_WIDTH].reshape(full, LINE_WIDTH)
    grid[:, LINE_WIDTH] = ord("\n")
    if rest:
        out[full * (LINE_WIDTH + 1) : -1] = seq[full * LINE_WIDTH :]
        out[-1] = ord("\n")
    return out.tobytes()


def write_fasta(
    path: Path, genomes: list[np.ndarray], contigs: Contigs, *, compresslevel: int = 1
) -> int:
    """gzip FASTA of every contig; returns the number of bases written.

    Level 1 compresses DNA nearly as well as 6 at several times the speed, which
    matters for the 1.5 Gbp benchmark sets.
    """
    total = int(contigs.length.sum())
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
        ) as gz,
        Progress("simulate: contigs", total=total, unit="bp") as bar,
    ):
        chunk: list[bytes] = []
        size = bases = 0
        for i, cid in enumerate(contigs.ids):
            start, length = int(contigs.start[i]), int(contigs.length[i])
            genome = genomes[contigs.genome[i]]
            if start + length <= len(genome):
                codes = genome[start : start + length]
            else:  # genomes are circular: a contig may run across the origin
                codes = np.concatenate([genome[start:], genome[: start + length - len(genome)]])
            seq = _ASCII_RC[codes[::-1]] if contigs.reverse[i] else _ASCII[codes]
            g0, g1 = contigs.gap[i]
            if g1 > g0:
                seq[g0:g1] = ord("N")
            record = b">" + cid.encode() + b"\n" + _wrap(seq)
            chunk.append(record)
            size += len(record)
            bases += length
            if size >= _FLUSH_BYTES:
                gz.write(b"".join(chunk))
                bar.advance(bases, contigs=len(chunk))
                chunk, size, bases = [], 0, 0
        gz.write(b"".join(chunk))
        bar.advance(bases, contigs=len(chunk))
    return total


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="ascii", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def write_abundance(path: Path, contigs: Contigs, samples: list[str]) -> None:
    """vamb's abundance TSV: ``contigname`` then one depth column per sample."""
    # Six significant digits, like typical mapping tools; formatted column-wise in numpy.
    columns = [np.char.mod("%.6g", contigs.depth[:, j]) for j in range(len(samples))]
    rows = ("\t".join(fields) for fields in zip(contigs.ids, *columns, strict=True))
    _write_lines(path, ["contigname\t" + "\t".join(samples), *rows])


def write_mmseqs2(path: Path, ids: list[str], labels: np.ndarray, tree: Tree) -> None:
    """MMseqs2 ``easy-taxonomy --tax-lineage 1`` nucleotide output: 5 columns, no header."""
    cache: dict[int, str] = {}

    def row(node: int) -> str:
        if node < 0:
            return "0\tno rank\tunclassified\t"
        if node not in cache:
            cache[node] = (
                f"{tree.taxid(node)}\t{NCBI_RANKS[tree.ranks[node]]}\t{tree.names[node]}\t"
                f"{tree.lineage_mmseqs(node)}"
            )
        return cache[node]

    _write_lines(path, (f"{cid}\t{row(int(node))}" for cid, node in zip(ids, labels, strict=True)))


KRAKEN2_K = 35  # Kraken2's default k-mer length: a contig of L bp has L - 34 k-mers


def write_kraken2(
    path: Path, ids: list[str], lengths: np.ndarray, labels: np.ndarray, tree: Tree
) -> None:
    """Kraken2 ``--output``: ``C/U``, id, taxid, length, then the k-mers' LCA runs.

    Every k-mer of a contig maps to its label here (one run), as if the database held it
    whole; tdstore reads columns 1-3 only.
    """
    rows = []
    for cid, length, node in zip(ids, lengths.tolist(), labels.tolist(), strict=True):
        kmers = max(length - KRAKEN2_K + 1, 0)
        if node < 0:
            rows.append(f"U\t{cid}\t0\t{length}\t0:{kmers}")
        else:
            taxid = tree.taxid(node)
            rows.append(f"C\t{cid}\t{taxid}\t{length}\t{taxid}:{kmers}")
    _write_lines(path, rows)


METABULI_HEADER = (
    "#is_classified\tname\ttaxID\tquery_length\tscore\te_value\trank\tlineage\ttaxID:match_count"
)


def write_metabuli(
    path: Path, ids: list[str], lengths: np.ndarray, labels: np.ndarray, tree: Tree
) -> None:
    """Metabuli ``classify --lineage 1``'s ``JOBID_classifications.tsv`` (1.2 layout).

    As Metabuli's ``Reporter`` writes it: the match list ends in a space; an unclassified
    row has ``-`` for e-value, rank, lineage and matches, and a trailing tab. The identity
    score is written as 1 and the e-value as 0, and the match count is the number of
    12-mer windows: the simulator has no alignment to score, and tdstore reads the flag,
    name, taxID and lineage only.
    """
    rows = [METABULI_HEADER]
    for cid, length, node in zip(ids, lengths.tolist(), labels.tolist(), strict=True):
        if node < 0:
            rows.append(f"0\t{cid}\t0\t{length}\t0\t-\t-\t-\t-\t")
            continue
        taxid = tree.taxid(node)
        rank = NCBI_RANKS[tree.ranks[node]]
        rows.append(
            f"1\t{cid}\t{taxid}\t{length}\t1\t0\t{rank}\t{tree.lineage_mmseqs(node)}\t"
            f"{taxid}:{max(length // 12, 1)} "
        )
    _write_lines(path, rows)


def write_taxometer(
    path: Path,
    ids: list[str],
    nodes: np.ndarray,
    tree: Tree,
    *,
    novel: np.ndarray | None = None,
) -> None:
    """Taxometer's ``contigs\\tpredictions`` TSV (plus a ``novel`` column for the gold)."""
    cache: dict[int, str] = {}

    def lineage(node: int) -> str:
        if node < 0:
            return ""
        if node not in cache:
            cache[node] = tree.lineage_gtdb(node)
        return cache[node]

    if novel is None:
        header = "contigs\tpredictions"
        rows = (f"{c}\t{lineage(int(n))}" for c, n in zip(ids, nodes, strict=True))
    else:
        header = "contigs\tpredictions\tnovel"
        rows = (
            f"{c}\t{lineage(int(n))}\t{'true' if v else 'false'}"
            for c, n, v in zip(ids, nodes, novel, strict=True)
        )
    _write_lines(path, [header, *rows])


def write_cami_binning(
    path: Path, contigs: Contigs, genome_ids: list[str], tree: Tree, sample_id: str
) -> None:
    """CAMI bioboxes binning gold standard: one row per contig, BINID = genome."""
    head = ["@Version:0.9.1", f"@SampleID:{sample_id}", "", "@@SEQUENCEID\tBINID\tTAXID\t_LENGTH"]
    rows = (
        f"{cid}\t{genome_ids[g]}\t{tree.taxid(int(tree.species[g]))}\t{length}"
        for cid, g, length in zip(contigs.ids, contigs.genome, contigs.length, strict=True)
    )
    _write_lines(path, [*head, *rows])


def write_taxdump(directory: Path, tree: Tree) -> None:
    """``nodes.dmp`` and ``names.dmp`` in NCBI's dump format (fields joined by ``\\t|\\t``)."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        nodes, names = [], []
        for node in range(tree.n_nodes):
            rank = "no rank" if node == 0 else NCBI_RANKS[tree.ranks[node]]
            parent = tree.taxid(int(tree.parents[node]))
            # tax_id, parent, rank, embl code, division, inherited div, genetic code,
            # inherited GC, mito code, inherited MGC, GenBank hidden, hidden subtree, comments
            fields = [str(tree.taxid(node)), str(parent), rank, "", "0", "1", "11", "1"]
            fields += ["0", "1", "0", "0", ""]
            nodes.append("\t|\t".join(fields) + "\t|")
            names.append(f"{tree.taxid(node)}\t|\t{tree.names[node]}\t|\t\t|\tscientific name\t|")
        (tmp / "nodes.dmp").write_text("\n".join(nodes) + "\n", encoding="ascii")
        (tmp / "names.dmp").write_text("\n".join(names) + "\n", encoding="ascii")
