"""Workflows (Snakemake, SLURM) that chain tdstore CLI steps; shipped as package data."""
