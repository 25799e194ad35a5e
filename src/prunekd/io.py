"""Small atomic writers: a killed stage never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import LINEAGE_FILE, safe_name


class MissingInputError(FileNotFoundError):
    """An input a stage reads is not there (run the stage that makes it): a user error, unlike
    any other missing file, which is a fault of prunekd's own."""


class StageBusyError(RuntimeError):
    """Another run of the same stage holds its lock."""


LOCKS = Path(".prunekd/locks")


@contextmanager
def exclusive(name: str, folder: Path = LOCKS) -> Iterator[None]:
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


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run the stage that makes it first")
    return json.loads(path.read_text())


def read_lineage(model_file: Path) -> dict[str, str]:
    """The run ids kept beside ``model_file`` (``lineage.json``): ``mlflow_run_id`` of the run that
    made it, and its parents'. Empty where none is kept (a model pulled from a DVC remote, say)."""
    path = Path(model_file).with_name(LINEAGE_FILE)
    try:
        lineage = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in lineage.items() if isinstance(v, str)} if isinstance(lineage, dict) else {}


@contextmanager
def atomic_dir(path: Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a scratch folder ``<path>.tmp`` that replaces ``path`` only if the block succeeds.

    Files named in ``keep`` that the block did not write are carried over from the old folder.
    """
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for name in keep:
            if (path / name).is_file() and not (tmp / name).exists():
                shutil.copy2(path / name, tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield ``<path's folder>/.<name>.tmp/<name>`` to write; it replaces ``path`` only if the block
    succeeds (same name in the scratch folder, so what the block logs of it is named right)."""
    scratch = path.parent / f".{path.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch / path.name
        os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
