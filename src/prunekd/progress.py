"""Progress of long loops: a live bar on a terminal; elsewhere (a log file, CI, the Prefect UI,
where a bar's carriage returns are noise) one plain line every ``PRUNEKD_PROGRESS_SECONDS``
seconds (default 30), so that a long epoch still shows it is moving."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

from .errors import UserError

T = TypeVar("T")
EVERY_ENV = "PRUNEKD_PROGRESS_SECONDS"


class _Lines:
    """tqdm's interface, as far as prunekd uses it, printing a line at most every ``every`` seconds."""

    def __init__(self, iterable: Iterable[T], total: int, desc: str, every: float):
        self.iterable, self.total, self.desc, self.every = iterable, total, desc, every
        self.postfix: dict[str, object] = {}

    def set_postfix(self, refresh: bool = False, **values: object) -> None:
        self.postfix = values

    def __iter__(self) -> Iterator[T]:
        last = time.monotonic()
        for done, item in enumerate(self.iterable):
            now = time.monotonic()
            if done and now - last >= self.every:  # ``done`` items are finished: the caller asked for the next
                extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
                print(f"{self.desc}: {done}/{self.total} ({100 * done / self.total:.0f} %){extra}",
                      file=sys.stderr, flush=True)
                last = now
            yield item


def progress(iterable: Iterable[T], total: int, desc: str):
    """``iterable`` with progress on stderr: a bar on a terminal, else a line now and then."""
    every = every_seconds()  # a bad setting is refused on a terminal too, where it is not used
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, mininterval=1.0)
    return _Lines(iterable, total, desc, every)


def every_seconds() -> float:
    """``PRUNEKD_PROGRESS_SECONDS`` as a number of seconds (30 where unset), refused in one line
    where it is none."""
    text = os.environ.get(EVERY_ENV, "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(f"{EVERY_ENV}={text!r}: expected a number of seconds (0 or more) between progress lines")
    return seconds
