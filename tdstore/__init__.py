"""tdstore: a store for taxonomic annotation of metagenomic contigs by knowledge distillation.

One expensive teacher pass (a genomic foundation model) per metagenome, then many cheap
student experiments selected with SQL::

    import tdstore
    store = tdstore.open("gut.tdstore")
"""

from __future__ import annotations

__version__ = "0.1.0"

from tdstore.store import Store, init, open_store  # noqa: E402

open = open_store  # noqa: A001 - mirrors the CLI's vocabulary: tdstore.open(path)

__all__ = ["Store", "__version__", "init", "open"]
