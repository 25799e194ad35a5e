"""Small atomic writers: a killed stage never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .paths import INT8_FILE, INT8_LINEAGE_FILE, LINEAGE_FILE, safe_name


class MissingInputError(UserError, FileNotFoundError):
    """An input a stage reads is not there (run the stage that makes it): a user error, unlike
    any other missing file, which is a fault of prunekd's own."""


class CorruptInputError(UserError, ValueError):
    """An input a stage reads is there but unreadable or not what its stage writes (cut short,
    edited, another format): a user error; rerun the stage that makes it."""


class StageBusyError(UserError, RuntimeError):
    """Another run of the same stage holds its lock."""



@contextmanager
def exclusive(name: str, folder: Path) -> Iterator[None]:
    """Hold the lock of stage ``name`` for the block: two runs of one stage (two flows, or a flow
    and `dvc repro`, which does not see the flow's runs) would share a checkpoint and a scratch
    folder, and destroy each other's outputs. The lock dies with its process, however it ends."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (safe_name(name) + ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise StageBusyError(f"another run of {name} is in progress (pid {holder}); wait for it to "
                                 "finish, or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object a stage wrote, with at least ``keys``, each a number where it is one."""
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run the stage that makes it first")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # cut short, edited, binary, nested deep
        raise CorruptInputError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]}); "
                                "rerun the stage that makes it") from None
    if not isinstance(data, dict):
        raise CorruptInputError(f"{path}: holds a {type(data).__name__}, not an object; rerun the stage that makes it")
    missing = [k for k in keys if not isinstance(data.get(k), (int, float)) or isinstance(data.get(k), bool)]
    if missing:
        raise CorruptInputError(f"{path}: no number under {missing[0]!r}; rerun the stage that makes it")
    return data


def read_table(path: Path, what: str, fix: str, columns: tuple[str, ...] = ()):
    """A CSV table a stage wrote, as a DataFrame; one user error if pandas cannot parse it (empty,
    binary, ragged rows: its parser fails in many ways) or it lacks one of ``columns``."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise CorruptInputError(f"{path}: not {what} ({' '.join(str(exc).split())[:120]}); {fix}") from None
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise CorruptInputError(f"{path}: no column {absent[0]!r}; {fix}")
    return table


def read_lineage(model_file: Path) -> dict[str, str]:
    """The run ids kept beside ``model_file`` (``lineage.json``; ``lineage.int8.json`` for an int8
    form): ``mlflow_run_id`` of the run that made it, and its parents'. Empty where none is kept (a
    model pulled from a DVC remote, say)."""
    path = Path(model_file).with_name(INT8_LINEAGE_FILE if Path(model_file).name == INT8_FILE else LINEAGE_FILE)
    try:
        lineage = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in lineage.items() if isinstance(v, str)} if isinstance(lineage, dict) else {}


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class OutsideProjectError(UserError, RuntimeError):
    """An output path that leads out of the project (through a symlink): never cleared or written."""


def inside(path: Path, root: Path) -> Path:
    """``path``, refused unless the folder it is in resolves inside ``root``. The last part may be a
    symlink: ``remove`` unlinks it and never follows it."""
    real_root, real = root.resolve(), path.parent.resolve() / path.name
    if not real.is_relative_to(real_root):
        raise OutsideProjectError(f"{path}: leads to {real}, outside the project ({real_root}), through a "
                                  "symlink; refusing to clear or write it: replace the link with a folder")
    return path


@contextmanager
def stage_outputs(*outputs: Path, root: Path) -> Iterator[Path]:
    """Make a stage's ``outputs`` (files or folders) all at once, or not at all.

    The block writes each output under its own name in the scratch folder it is given
    (``scratch / output.name``; a folder output is the block's to create). When the block
    succeeds, the previous run's outputs are removed (every one named, made this time or not)
    and the new ones moved into place; when it fails or is killed, the previous outputs stay as
    they were and the scratch goes: a corrupt input found late, a tracking server that stops
    taking writes, a crash, lose nothing, and DVC never caches a half-written output. (``dvc
    repro`` removes a stage's outputs itself before it runs; they are in its cache.) The scratch
    folder (``.<first output>.tmp`` beside it) is ignored by git and DVC (``*.tmp``). Every
    output must lie inside the project ``root`` once symlinks are resolved (``inside``).
    """
    outputs = tuple(inside(path, root) for path in outputs)
    names = [path.name for path in outputs]
    if len(set(names)) != len(names):
        raise ValueError(f"outputs must have distinct names: {names}")
    scratch = outputs[0].parent / f".{outputs[0].name}.tmp"
    remove(scratch)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        with signals_held():
            for path in outputs:
                remove(path)
                if (scratch / path.name).exists():  # an output the stage makes only sometimes (history.csv)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(scratch / path.name, path)
    finally:
        remove(scratch)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back for the block, then delivered: a stage stopped while it swaps
    its outputs in would leave the new model beside the old metrics. (A kill no process can hold
    back, SIGKILL, still can; DVC then finds outputs that match no run and reruns the stage.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    held: list[int] = []
    before = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])
