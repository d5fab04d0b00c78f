"""Every on-disk object of a store, declared once.

Store layout (paths relative to the store directory)::

    manifest.json                     tdstore.manifest
    core/                             published by ingest with ONE directory rename
      core.json                       tdstore.core        refhash, counts, samples, sources
      contigs.parquet                 tdstore.contigs     kept AND filtered contigs
      sequences.parquet               tdstore.sequences   kept contigs only, by row
      features.zarr/tnf               tdstore.tnf         N x 103 float32, raw (not z-scored)
      features.zarr/abundance         tdstore.abundance   N x K float32, raw counts/depths
    taxonomy.parquet                  tdstore.taxonomy    one tree for every label set
    labels/<name>.parquet             tdstore.labels
    embeddings/<name>.zarr            tdstore.embeddings  (+ n_windows array, shard markers)
    soft_labels/<name>.parquet        tdstore.soft_labels
    soft_labels/<name>.head.safetensors  teacher head weights
    subsets/<name>.parquet            tdstore.subset
    runs/<name>/run.json              tdstore.run
    runs/<name>/weights.safetensors
    runs/<name>/predictions.parquet   tdstore.predictions
    runs/<name>/metrics.parquet       tdstore.metrics
    metrics/labels-<name>.parquet     tdstore.metrics     evaluation of a label set
    cache/calls.duckdb                tdstore.calls       derived: the `calls` view materialised
                                                          (DuckDB file; rebuilt when stale)

Rows: ``row`` is the dense 0..N-1 index of a KEPT contig (the row in every array);
filtered contigs appear only in ``contigs.parquet`` with a null ``row``.
Taxon id 0 is the root; a label pointing at 0 means "unclassified".
"""

from __future__ import annotations

from tdstore.schemas.registry import ArraySpec, Column, DocumentSpec, TableSpec, register

C = Column

MANIFEST = register(
    DocumentSpec(
        "tdstore.manifest",
        1,
        required=("tdstore_version", "created"),
        doc="Top-level store document; its presence makes a directory a store.",
    )
)

CORE = register(
    DocumentSpec(
        "tdstore.core",
        1,
        required=("refhash", "n_contigs", "n_filtered", "min_length", "samples"),
        doc="Written inside core/ before the directory is renamed into place.",
    )
)

CONTIGS = register(
    TableSpec(
        "tdstore.contigs",
        1,
        (
            C("row", "int64", nullable=True, doc="dense row of kept contigs; null if filtered"),
            C("contig_id", "string", doc="FASTA header up to the first whitespace"),
            C("sample", "string", nullable=True, doc="from S{n}C{m} ids or --sample"),
            C("length", "int64"),
            C(
                "gc",
                "float32",
                nullable=True,
                doc="G+C over A+C+G+T (N and IUPAC excluded); null if no A/C/G/T",
            ),
            C("n_count", "int64", doc="bases that are not A/C/G/T"),
            C("seq_md5", "string", doc="md5 of the upper-cased sequence"),
            C("kept", "bool", doc="passed the length filter"),
        ),
        doc="Every contig of the assembly, in FASTA order.",
    )
)

SEQUENCES = register(
    TableSpec(
        "tdstore.sequences",
        1,
        (C("row", "int64"), C("sequence", "large_string", doc="upper case")),
        doc="Kept contigs' sequences so a GPU box needs only the store to embed.",
    )
)

TNF = register(
    ArraySpec("tdstore.tnf", 1, "float32", 2, doc="N x 103 vamb TNF projection, not z-scored")
)
ABUNDANCE = register(
    ArraySpec("tdstore.abundance", 1, "float32", 2, doc="N x K raw abundances; attrs sample names")
)

TAXONOMY = register(
    TableSpec(
        "tdstore.taxonomy",
        1,
        (
            C("taxon_id", "int64"),
            C("rank", "string", doc="root, domain, phylum, class, order, family, genus, species"),
            C("name", "string", doc="GTDB style with rank prefix, e.g. g__Bacteroides"),
            C("parent_id", "int64", nullable=True, doc="null only for the root (id 0)"),
        ),
    )
)

LABELS = register(
    TableSpec(
        "tdstore.labels",
        1,
        (
            C("row", "int64"),
            C("contig_id", "string"),
            C("taxon_id", "int64", doc="deepest taxon of the lineage; 0 = unclassified"),
            C(
                "novel",
                "bool",
                nullable=True,
                doc="gold standards: species absent from the reference",
            ),
        ),
        doc="One label set; provenance (tool, source, imported_at, counts) in metadata.",
    )
)

EMBEDDINGS = register(
    ArraySpec("tdstore.embeddings", 1, "float16", 2, doc="N x hidden pooled embeddings")
)
EMBEDDING_WINDOWS = register(
    ArraySpec("tdstore.embedding_windows", 1, "int32", 1, doc="windows per contig")
)
EMBEDDING_CACHE = register(
    TableSpec(
        "tdstore.embedding_cache",
        1,
        (
            C("seq_md5", "string", doc="md5 of the upper-cased sequence"),
            C("vector", "binary", doc="hidden x float16, little-endian, as stored"),
            C("n_windows", "int32"),
        ),
        doc="Outside stores: <cache>/<fingerprint>/part-*.parquet, shared between stores.",
    )
)

SOFT_LABELS = register(
    TableSpec(
        "tdstore.soft_labels",
        1,
        (
            C("row", "int64"),
            C("contig_id", "string"),
            C("leaf_ids", "list<int64>", doc="top-k leaves, most probable first"),
            C("leaf_probs", "list<float32>"),
            C("rest_mass", "float32", doc="1 - sum(leaf_probs)"),
            C("lineage_ids", "list<int64>", doc="predicted lineage, domain first"),
            C("lineage_probs", "list<float32>", doc="node probability along the lineage"),
            C("taxon_id", "int64", doc="deepest node of the lineage with probability > 0.5"),
            C("confidence", "float32", doc="probability of the most probable leaf"),
            C("fold", "int16", doc="cross-fitting fold that produced this row"),
        ),
        doc="Teacher soft labels; provenance in metadata.",
    )
)

TEACHER_HEAD = register(
    DocumentSpec(
        "tdstore.teacher_head",
        1,
        required=("head", "hidden", "n_leaves"),
        doc="soft_labels/<name>.head.safetensors: tag in the safetensors header metadata.",
    )
)

SUBSET = register(
    TableSpec(
        "tdstore.subset",
        1,
        (C("row", "int64"),),
        doc="Sorted rows; metadata: sql, sql_hash, refhash, created.",
    )
)

RUN = register(
    DocumentSpec(
        "tdstore.run",
        1,
        required=("name", "config", "status"),
        doc="A student run: resolved config, versions, seed, per-epoch loss, status.",
    )
)

PREDICTIONS = register(
    TableSpec(
        "tdstore.predictions",
        1,
        (
            C("row", "int64"),
            C("contig_id", "string"),
            C("taxon_id", "int64", doc="deepest node with probability > 0.5; 0 = none"),
            C("lineage_ids", "list<int64>", doc="nodes along the lineage, domain first"),
            C(
                "lineage_scores",
                "list<float32>",
                doc="the score users threshold: calibrated probability that each node is right",
            ),
            C("raw_scores", "list<float32>", doc="the student's node probabilities"),
        ),
    )
)

METRICS = register(
    TableSpec(
        "tdstore.metrics",
        1,
        (
            C("source", "string", doc="run name or labels:<set>"),
            C("gold", "string"),
            C("group", "string", doc="all, known, novel, or sample:<name>"),
            C("rank", "string"),
            C("threshold", "float32"),
            C("n_contigs", "int64", doc="contigs of the group in the gold set"),
            C("n_gold", "int64", doc="of those, gold lineage reaches this rank (recall's base)"),
            C("correct", "int64"),
            C("wrong", "int64"),
            C("unassigned", "int64"),
            C("overcalled", "int64", doc="calls where gold stops above this rank (not in P/R)"),
            C("precision", "float64", doc="NaN when nothing was called"),
            C("recall", "float64", doc="NaN when n_gold = 0"),
            C("f1", "float64", doc="0 when P + R = 0; NaN when n_gold = 0"),
        ),
        doc="Per-rank evaluation against a gold label set; metadata: refhash, created.",
    )
)

CALLS = register(
    DocumentSpec(
        "tdstore.calls",
        1,
        required=("fingerprint", "inputs", "n_rows", "columns"),
        doc="cache/calls.duckdb: table `calls` (one row per kept contig, every source's call "
        "as flat columns, row order) and this document in table `tdstore_meta`. A cache whose "
        "fingerprint differs from its inputs' is never used (tdstore.calls).",
    )
)
