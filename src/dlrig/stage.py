"""The door every stage script goes through: its outputs as one set, and its errors as one line.

A :class:`~dlrig.errors.UserError` is printed as one line (``error: ...``) with exit status 2 and no
traceback; Ctrl-C prints one line and exits 130; any other exception is a bug and keeps its traceback. In
every case the stage's outputs are either all renamed into place (success) or none are (see
:func:`dlrig.io.output_set`). Kept apart from :mod:`dlrig.cli` so a stage depends on this small module,
not on every command's imports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from dlrig.errors import UserError
from dlrig.io import output_set


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Call a stage's ``main`` and turn user errors into one clean line and exit status 2."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        with output_set():  # all of the stage's outputs appear together, or none of them
            main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was changed by the unfinished step; rerun to resume "
              "(finished fits are cached)", file=sys.stderr)
        sys.exit(130)
