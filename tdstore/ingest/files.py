"""Input files: say precisely why a path cannot be read as one.

Every input is read more than once (a format probe, the parse, its md5 for provenance),
so a pipe (``/dev/stdin``, ``<(zcat x.gz)``) would be used up by the first read and give
a misleading error later; it is refused up front instead::

    require_regular_file(Path("contigs.fna.gz"))   # BadInputError unless a readable file
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tdstore.errors import BadInputError


def require_regular_file(path: Path) -> None:
    """Raise a one-line BadInputError unless ``path`` is a readable regular file."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise BadInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise BadInputError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        raise BadInputError(
            f"{path}: not a regular file (pipes are not supported: write it to a file first)"
        )
    if not os.access(path, os.R_OK):
        raise BadInputError(f"{path}: permission denied")
