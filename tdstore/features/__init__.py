"""Contig features: TNF (vamb's 103-d projection), abundances, and the student's normalisation."""
