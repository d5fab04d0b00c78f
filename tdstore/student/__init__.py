"""The student: Taxometer's network on TNF + abundances, trained from the store."""
