"""Reading users' files (FASTA, abundance TSV, label TSVs, taxdumps) into the store."""
