"""Per-epoch training checkpoints, so that a killed stage resumes where it stopped.

A checkpoint lives outside the DVC outputs (DVC deletes a stage's outputs before it reruns the
stage), one folder per stage under ``.prunekd/checkpoints/``, holding only the latest finished
epoch: weights, optimizer, LR schedule, metrics so far and every RNG state, so that the resumed
run ends bit-identical to an uninterrupted one. It is keyed by a fingerprint of everything that
decides the training; a checkpoint made with other settings, data, start weights or code is
ignored, never resumed. It loads with ``torch.load(weights_only=True)``: no pickled objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .paths import safe_name

FILE = "checkpoint.pt"
FORMAT = 2
KEYS = {"format", "fingerprint", "epoch", "history", "threads", "model", "best", "optimizer", "scheduler", "rng"}

# The modules whose code decides a run's numbers: a checkpoint made by other code is not resumed.
TRAINING_CODE = ("checkpoint.py", "data.py", "distill.py", "models.py", "train.py")


# ---- fingerprints ------------------------------------------------------------------

def _plain(obj: object) -> object:
    """JSON-able form of config objects: dataclasses, pydantic models, paths (by content)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if isinstance(obj, Path):
        return {"file": hashlib.blake2b(obj.read_bytes(), digest_size=16).hexdigest() if obj.is_file() else None}
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}")


def _feed(h: hashlib.blake2b, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the exact bytes, whatever the dtype
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq {len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=_plain).encode())


def fingerprint(*parts: object) -> str:
    """A hash of ``parts``: tensors by their bytes, config objects by value, paths by content."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def training_code() -> dict[str, str]:
    folder = Path(__file__).parent
    return {name: fingerprint(folder / name) for name in TRAINING_CODE}


# ---- RNG states, as tensors and plain lists (torch.load(weights_only=True) refuses numpy) ----

def rng_state(gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"generator": gen.get_state(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():  # the training device's only: another count of visible GPUs resumes too
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---- the checkpoint of one stage ---------------------------------------------------

def _read(path: Path, epochs: int) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or set(state) != KEYS or state["format"] != FORMAT:
        raise ValueError("not a prunekd checkpoint")
    if not 0 < state["epoch"] == len(state["history"]) <= epochs:
        raise ValueError(f"holds epoch {state['epoch']} of {epochs}")
    return state


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else "no message"


class Checkpoint:
    """Where one stage keeps its latest epoch, and what (besides fit's arguments) decides it."""

    def __init__(self, stage: str, identity: tuple, root: Path):
        self.stage, self.identity = stage, identity
        self.folder = root / safe_name(stage)
        self.path = self.folder / FILE
        self.resumed_from = 0
        self.best_weights: dict[str, torch.Tensor] = {}  # the best epoch's, when the run keeps it

    def key(self, *training: object) -> str:
        """The fingerprint a run must match to resume: fit's inputs, this stage and the code."""
        return fingerprint(self.stage, self.identity, training, training_code(), torch.__version__)

    def save(self, key: str, history: list[dict[str, float]], model: nn.Module,
             opt: torch.optim.Optimizer, lr_sched, gen: torch.Generator,
             best: dict[str, torch.Tensor] | None = None) -> None:
        """Write the state after epoch ``len(history)``, atomically (a kill leaves the previous one);
        ``best``: the best epoch's weights, for a run that ends with them."""
        state = {"format": FORMAT, "fingerprint": key, "epoch": len(history), "history": history,
                 "threads": torch.get_num_threads(), "model": model.state_dict(), "best": best or {},
                 "optimizer": opt.state_dict(), "scheduler": lr_sched.state_dict(), "rng": rng_state(gen)}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(FILE + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self, key: str, epochs: int) -> dict | None:
        """The saved state if it exists, reads cleanly and was made with these settings; else None."""
        if not self.path.is_file():
            return None
        try:
            state = _read(self.path, epochs)
        except Exception as exc:  # truncated, corrupt or foreign: train from scratch rather than crash
            return self._ignore(f"unreadable ({type(exc).__name__}: {_first_line(exc)})")
        if state["fingerprint"] != key:
            return self._ignore("made with other settings, data, start weights or code")
        return state

    def _ignore(self, why: str) -> None:
        print(f"{self.stage}: ignoring checkpoint {self.path}: {why}; training from scratch", file=sys.stderr)
        self.clear()

    def resume(self, key: str, epochs: int, model: nn.Module, opt: torch.optim.Optimizer, lr_sched,
               gen: torch.Generator, on_epoch: Callable[[int, dict], None] | None) -> list[dict[str, float]]:
        """Restore the latest matching epoch, if any, and replay its metrics; returns them."""
        state = self.load(key, epochs)
        if state is None:
            return []
        model.load_state_dict(state["model"])
        self.best_weights = state["best"]
        opt.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["scheduler"])
        self.resumed_from = state["epoch"]
        print(f"{self.stage}: resuming from epoch {state['epoch']}/{epochs} (checkpoint {self.folder})", file=sys.stderr)
        if state["threads"] != torch.get_num_threads():
            print(f"{self.stage}: the checkpoint was made with {state['threads']} torch threads, this run has "
                  f"{torch.get_num_threads()}; the last digits may differ from an uninterrupted run", file=sys.stderr)
        for epoch, metrics in enumerate(state["history"], start=1):
            if on_epoch:
                on_epoch(epoch, metrics)
        set_rng_state(state["rng"], gen)  # last: the callbacks may draw random numbers
        return state["history"]

    def tags(self) -> dict[str, str]:
        return {"resumed_from_epoch": str(self.resumed_from)} if self.resumed_from else {}

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def resumable(stage: str, *identity: object, root: Path) -> Iterator[Checkpoint]:
    """A stage's checkpoint, removed once the block finishes without error.

    ``identity``: what decides the training besides fit's own arguments (the loss settings,
    say); config objects count by value, paths by their content.
    """
    checkpoint = Checkpoint(stage, identity, root)
    yield checkpoint
    checkpoint.clear()
