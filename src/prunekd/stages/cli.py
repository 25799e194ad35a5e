"""The command line of every stage: arguments, params, signals, the stage lock, and the
one-line contract for errors a user can fix (exit 2, no traceback)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable

from ..config import Params, load_params
from ..constants import USER_ERROR
from ..errors import UserError
from ..io import exclusive, inside
from ..paths import PARAMS_FILE, Layout, safe_name

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


def seed_arg(text: str) -> int:
    """``--seed``: a whole number that numpy takes as a seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not in 0 .. 2**32 - 1")
    return value


DVC_STAGE = "DVC_STAGE"  # set by DVC (and the flow) to the stage it runs: ``retrain@0.3-kd-0``


def item_arguments(stage: str, p: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The matrix item that DVC runs this stage for, as the stage's required options, read from
    DVC_STAGE, where the command line gives none of them.

    dvc.yaml's commands name no param (``prunekd retrain``): DVC pastes a param's text into a
    command that a shell runs, so a value written as ``0.3; rm -rf ~`` would run. The item's
    values come from the environment instead, as data, and are checked like typed options.
    """
    options = [a for a in p._actions if a.required and a.option_strings]
    name, _, item = os.environ.get(DVC_STAGE, "").rpartition(":")[2].partition("@")
    if not options or name != stage or any(arg.split("=")[0] in a.option_strings for a in options for arg in argv):
        return []
    values = item.rsplit("-", len(options) - 1)
    if len(values) != len(options):
        p.error(f"{DVC_STAGE}={os.environ[DVC_STAGE]!r} is not {stage}@" + "-".join(f"<{a.dest}>" for a in options))
    return [arg for action, value in zip(options, values) for arg in (action.option_strings[0], value)]


def run_cli(stage: str, argv: list[str] | None, body: Body, *,
            add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            doc: str | None = None, tracked: bool = True) -> int:
    """Parse the CLI, load params, run the stage in the working directory's layout; user errors
    exit 2 with one clear line. ``tracked``: the stage logs to MLflow, so the store is checked first
    (a stage that logs nothing does without it, and without importing MLflow and PyTorch)."""
    p = argparse.ArgumentParser(prog=f"prunekd {stage}", description=doc)
    p.add_argument("--params", default=PARAMS_FILE, help=f"params file (default: {PARAMS_FILE})")
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv + item_arguments(stage, p, argv))
    # Both signals set here: a process started in the background inherits SIGINT ignored, and
    # Python then leaves it ignored, so Ctrl-C (or a flow stopping it) would not stop the stage.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    layout = Layout()
    try:
        params = load_params(args.params)
        if tracked:
            from ..tracking import check_reachable

            check_reachable()  # before any data is read or any epoch trained
        # what goes in them is written and cleared: never through a link out of the project (the
        # stage's checkpoint folder is written into, so it may not be such a link either)
        for path in (layout.locks / safe_name(stage), layout.checkpoints / safe_name(stage) / "-"):
            inside(path, layout.root)
        with exclusive(stage_key(stage, args), layout.locks):
            body(args, params, layout)
    except (UserError, PermissionError) as exc:  # failures a user can fix: one line, not a traceback
        message = " ".join(line.strip() for line in str(exc).splitlines())
        print(f"prunekd {stage}: error: {message}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT  # raised before the handlers
        print(f"prunekd {stage}: interrupted ({signal.Signals(signum).name}); rerun it to resume", file=sys.stderr)
        return 128 + signum
    return 0
