"""The teacher pass: embed contigs with a foundation model (or k-mers), then soft labels."""
