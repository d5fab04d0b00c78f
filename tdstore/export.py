"""Export a run's predictions: Taxometer's result TSV, or a CAMI bioboxes taxonomic binning file.

Taxometer (vamb 5.0.4 ``PredictedTaxonomy.write_as_tsv``) writes the header
``contigs\\tpredictions\\tscores``, then per contig the ``;``-joined names of the nodes
above the threshold and their scores as ``str(round(float32, 5))`` joined by ``;``;
a contig with no call keeps its line with two empty fields::

    export_run(store, "kd-a05", "taxometer", "result_taxometer.tsv", threshold=0.5)
    export_run(store, "kd-a05", "cami", "kd-a05.binning")

The CAMI file's TAXID is the taxid of a taxdump (``--taxdump``: the NCBI dump of the gold
standard, which AMBER needs) or, without one, the store's integer taxon id: a store keeps
names, not taxids (see :func:`cami_lines`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from tdstore.atomic import atomic_path
from tdstore.errors import UsageError
from tdstore.outputs import check_output_file
from tdstore.store import Store
from tdstore.taxonomy import RANKS, Taxonomy

TAXOMETER_HEADER = "contigs\tpredictions\tscores"
CAMI_VERSION = "0.9.1"
FORMATS = ("taxometer", "cami")

# Calibrated scores above 0.8 stop novel species at genus (benchmarks/RESULTS.md, Student);
# Taxometer's own rule is 0.5 on raw scores (--threshold 0.5 --raw).
DEFAULT_THRESHOLD = 0.8


def check_threshold(threshold: float) -> None:
    """``--threshold`` of export and predict: a score, and one that some call can pass."""
    if not 0.0 <= threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), not {threshold}")


def taxometer_score(value: float) -> str:
    """Taxometer's formatting: clipped to [0, 1], ``str(round(numpy.float32, 5))``."""
    return str(round(np.float32(min(max(float(value), 0.0), 1.0)), 5))


def called_lineages(
    table: pa.Table, *, threshold: float, raw: bool = False
) -> Iterator[tuple[str, list[int], list[float]]]:
    """(contig id, called taxon ids, their scores): the chain prefix with score > threshold."""
    column = "raw_scores" if raw else "lineage_scores"
    ids = table.column("contig_id").to_pylist()
    lineages = table.column("lineage_ids").to_pylist()
    scores = table.column(column).to_pylist()
    for contig, lineage, score in zip(ids, lineages, scores, strict=True):
        taxa: list[int] = []
        kept: list[float] = []
        for taxon, value in zip(lineage or [], score or [], strict=True):
            # Taxometer keeps every node above the threshold; along a chain whose scores
            # never increase that is a prefix, so stop at the first node that fails.
            if value is None or not value > threshold:
                break
            taxa.append(taxon)
            kept.append(value)
        yield contig, taxa, kept


def taxometer_lines(
    table: pa.Table, taxonomy: Taxonomy, *, threshold: float = DEFAULT_THRESHOLD, raw: bool = False
) -> list[str]:
    lines = [TAXOMETER_HEADER + "\n"]
    for contig, taxa, scores in called_lineages(table, threshold=threshold, raw=raw):
        names = ";".join(taxonomy.names[t] for t in taxa)
        values = ";".join(taxometer_score(v) for v in scores)
        lines.append(f"{contig}\t{names}\t{values}\n")
    return lines


def cami_lines(
    table: pa.Table,
    taxonomy: Taxonomy,
    samples: dict[str, str | None],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    default_sample: str = "tdstore",
    raw: bool = False,
    taxids: dict[int, int] | None = None,
) -> list[str]:
    """CAMI (bioboxes) taxonomic binning: one section per sample, each from ``@Version``.

    CAMI tools (AMBER, OPAL) read TAXID as an NCBI taxid. A store keeps names (labels
    imported with a taxdump become GTDB-style names, with placeholders such as
    ``c__Foo (no class)`` that no taxid names), so TAXID comes from ``taxids`` (store
    taxon id -> taxid, :meth:`TaxDump.taxids_of`): the deepest called node that has one.
    Without ``taxids`` TAXID is the store's integer taxon id of the deepest called node:
    compare such a file with a gold standard of the same store, or map the ids through
    ``taxonomy.parquet``. A name never goes in TAXID: names hold spaces. ``_RANK`` (of the
    TAXID) and ``_LINEAGE`` (the called names, domain first) are extra columns, which
    bioboxes allows when ``_``-prefixed. Contigs with no call at the threshold, or none
    that ``taxids`` names, are left out: CAMI reads a contig that is absent as unassigned.
    """
    by_sample: dict[str, list[str]] = {}
    for contig, taxa, _ in called_lineages(table, threshold=threshold, raw=raw):
        depth = len(taxa)
        if taxids is not None:
            while depth and taxa[depth - 1] not in taxids:
                depth -= 1
        if not depth:
            continue
        deepest = taxa[depth - 1]
        taxid = deepest if taxids is None else taxids[deepest]
        sample = samples.get(contig) or default_sample
        lineage = ";".join(taxonomy.names[t] for t in taxa)
        rank = RANKS[depth - 1]
        by_sample.setdefault(sample, []).append(f"{contig}\t{taxid}\t{rank}\t{lineage}\n")
    if not by_sample:
        by_sample[default_sample] = []
    lines: list[str] = []
    for sample, rows in by_sample.items():
        lines += [
            f"@Version:{CAMI_VERSION}\n",
            f"@SampleID:{sample}\n",
            "\n",
            "@@SEQUENCEID\tTAXID\t_RANK\t_LINEAGE\n",
        ]
        lines += rows
        lines.append("\n")
    return lines


def export_run(
    store: Store,
    run: str,
    format: str,
    output: Path | str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    raw: bool = False,
    taxdump: Path | str | None = None,
) -> dict[str, int | str]:
    """Write a run's predictions in ``format``; returns counts for the CLI to report.

    ``taxdump`` (CAMI only): write that dump's taxids; ``not_in_taxdump`` then counts the
    called contigs left out because no called taxon of theirs is in it, and
    ``above_called_rank`` those written at an ancestor of their call.
    """
    from tdstore.student.runs import load_predictions

    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if taxdump is not None and format != "cami":
        raise UsageError(f"--taxdump is only used with --format cami, not {format}")
    check_threshold(threshold)
    output = check_output_file(output, store=store)
    table, _ = load_predictions(store, run)
    table = table.sort_by("row")
    taxonomy = store.taxonomy()
    taxids = None
    if taxdump is not None:
        from tdstore.ingest.taxdump import TaxDump

        taxids = TaxDump.load(taxdump).taxids_of(taxonomy)
    if format == "taxometer":
        lines = taxometer_lines(table, taxonomy, threshold=threshold, raw=raw)
    else:
        contigs = store.contigs(columns=["contig_id", "sample", "kept"])
        samples = dict(
            zip(
                contigs.column("contig_id").to_pylist(),
                contigs.column("sample").to_pylist(),
                strict=True,
            )
        )
        lines = cami_lines(
            table,
            taxonomy,
            samples,
            threshold=threshold,
            default_sample=store.path.stem,
            raw=raw,
            taxids=taxids,
        )
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)
    calls = [taxa for _, taxa, _ in called_lineages(table, threshold=threshold, raw=raw) if taxa]
    result: dict[str, int | str] = {
        "path": str(output),
        "contigs": table.num_rows,
        "called": len(calls),
        "format": format,
    }
    if taxids is not None:
        result["not_in_taxdump"] = sum(1 for taxa in calls if not any(t in taxids for t in taxa))
        # Written at an ancestor: the dump lacks the deepest called taxon (a placeholder
        # such as "c__Foo (no class)", or a taxon of another taxonomy).
        result["above_called_rank"] = sum(
            1 for taxa in calls if taxa[-1] not in taxids and any(t in taxids for t in taxa)
        )
    return result
