"""The command line of every stage: arguments, params, signals, the stage lock, and the
one-line contract for errors a user can fix (exit 2, no traceback)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable

from ..config import ConfigError, Params, load_params
from ..constants import USER_ERROR
from ..data import DataError
from ..export import ExportError
from ..io import MissingInputError, StageBusyError, exclusive
from ..models import ModelFileError
from ..paths import Layout
from ..prune import PruneTargetError
from ..tracking import TrackingError, check_reachable
from ..train import DivergenceError

# Failures a user can fix; they get one line, not a traceback.
USER_ERRORS = (ConfigError, DataError, ModelFileError, PruneTargetError, DivergenceError, MissingInputError,
               TrackingError, ExportError, StageBusyError, PermissionError)

Body = Callable[[argparse.Namespace, Params, Layout], object]


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, unwinding like Ctrl-C: outputs are not half-written, the checkpoint stays,
    the MLflow run ends KILLED."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    raise Interrupted(signum)


def stage_key(stage: str, args: argparse.Namespace) -> str:
    """The stage's DVC name from its CLI arguments: ``retrain@0.3-kd-0``."""
    items = [str(v) for k, v in vars(args).items() if k != "params"]
    return f"{stage}@{'-'.join(items)}" if items else stage


def ratio_arg(text: str) -> float:
    """``--ratio``: a number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1 (exclusive)")
    return value


def run_cli(stage: str, argv: list[str] | None, body: Body,
            add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            doc: str | None = None) -> int:
    """Parse the CLI, load params, run the stage in the working directory's layout; user errors
    exit 2 with one clear line."""
    p = argparse.ArgumentParser(prog=f"prunekd {stage}", description=doc)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    add_arguments(p)
    args = p.parse_args(argv)
    # Both signals set here: a process started in the background inherits SIGINT ignored, and
    # Python then leaves it ignored, so Ctrl-C (or a flow stopping it) would not stop the stage.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    layout = Layout()
    try:
        params = load_params(args.params)
        check_reachable()  # before any data is read or any epoch trained
        with exclusive(stage_key(stage, args), layout.locks):
            body(args, params, layout)
    except USER_ERRORS as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines())
        print(f"prunekd {stage}: error: {message}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT  # raised before the handlers
        print(f"prunekd {stage}: interrupted ({signal.Signals(signum).name}); rerun it to resume", file=sys.stderr)
        return 128 + signum
    return 0
