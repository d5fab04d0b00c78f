"""The ``tdstore`` command line: thin typer commands over the library (see main.py)."""
