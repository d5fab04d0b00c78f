"""Exceptions that are part of tdstore's interface.

Every class of user error has its own type and exit code. The CLI catches
:class:`TdstoreError` once, prints ``error: <message>`` on one line and exits with
``exc.exit_code``. Library users catch the specific subclass they care about::

    try:
        tdstore.open("gut.tdstore")
    except tdstore.errors.SchemaError as exc:
        ...
"""

from __future__ import annotations


class TdstoreError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(TdstoreError):
    """Bad options or names (exit 2, the same code click uses for usage errors)."""

    exit_code = 2


class BadInputError(TdstoreError):
    """An input file is malformed; the message names the file and the line or contig."""

    exit_code = 3


class IncompleteError(TdstoreError):
    """A step or object is missing or unfinished (run the earlier step, or resume)."""

    exit_code = 4


class UnfinishedProblem(str):
    """A ``tdstore check`` problem that re-running the interrupted command fixes.

    A store whose only problems are of this kind is incomplete (exit 4), not damaged (5).
    """


class SchemaError(TdstoreError):
    """A stored object has an unknown schema name or version, or is corrupt."""

    exit_code = 5


class ConflictError(TdstoreError):
    """The object exists already, belongs to other store content, or is locked."""

    exit_code = 6


class ModelError(TdstoreError):
    """A model directory cannot be loaded safely (missing files, remote code)."""

    exit_code = 7


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (please report it)",
    2: "usage: bad option, argument or name",
    3: "bad input: a malformed file; the message names file and line or contig",
    4: "incomplete: a required step has not run or did not finish",
    5: "schema: unknown schema version or corrupt stored object",
    6: "conflict: exists already, other store content, or locked by another process",
    7: "model: model directory cannot be loaded safely",
    130: "interrupted (Ctrl-C); finished work is kept and the step can be resumed",
}
