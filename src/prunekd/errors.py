"""The one base of the failures a user can fix, so a caller catches them all without importing
the module that raises each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from .constants import USER_ERROR


class UserError(Exception):
    """A failure a user can fix (bad params, a missing, damaged or busy input): a stage prints it
    as one line and exits 2 (``constants.USER_ERROR``), without a traceback."""


def refuse(message: str) -> NoReturn:
    """A script's bad input, as a stage reports one: ``message`` in one line on stderr after the
    script's name, and exit 2."""
    print(f"{Path(sys.argv[0]).name}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(USER_ERROR)
