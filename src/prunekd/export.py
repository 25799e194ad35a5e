"""The deploy form of a model as ONNX: BatchNorm folded, a dynamic batch axis.

``prunekd export <model.pt> [--out model.onnx]`` writes it for any prunekd model file; every
stage that saves a model writes ``model.onnx`` beside ``model.pt`` the same way.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from .errors import UserError
from .measure import fold_batchnorm
from .models import ModelFileError, PrunableNet, load_model

INPUT, OUTPUT = "input", "logits"
OPSET = 17


class ExportError(UserError, RuntimeError):
    """A model that ONNX cannot express; the message names the model and the operator."""


@contextmanager
def _silenced() -> Iterator[None]:
    """The exporter's C++ side prints the whole graph to stdout when an operator fails; the
    error raised says what matters, on one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def onnx_bytes(model: PrunableNet, source: str | Path = "model") -> bytes:
    """The ONNX encoding of ``model``'s deploy form (eval mode, BatchNorm folded, batch axis dynamic).

    TorchScript-based exporter: the same bytes for the same weights, in a tenth of a second
    (the dynamo exporter takes seconds per model and needs onnxscript).
    """
    deployed = fold_batchnorm(model).cpu().eval()
    example = torch.zeros(2, *model.input_shape)  # two images: a traced batch of 1 could be specialised
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _silenced():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice
            torch.onnx.export(deployed, (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    except Exception as exc:  # unsupported operators, untraceable control flow: one line
        text = " ".join(str(exc).split())
        op = re.search(r"operator '?([\w:.]+)'?", text)
        raise ExportError(f"{source}: cannot export to ONNX: "
                          f"{'operator ' + op.group(1) + ': ' if op else ''}{text[:200]}") from None
    return buffer.getvalue()


def export_onnx(model: PrunableNet, path: Path, source: str | Path | None = None) -> Path:
    """Write ``model``'s deploy form to ``path`` as ONNX, atomically."""
    data = onnx_bytes(model, source or path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prunekd export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a prunekd model file (model.pt)")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: beside it, .pt made .onnx)")
    args = p.parse_args(argv)
    out = args.out or args.model.with_suffix(".onnx")
    if out.resolve() == args.model.resolve():
        print(f"prunekd export: error: --out {out}: is the model file itself; name another file", file=sys.stderr)
        return 2
    try:
        model, _ = load_model(args.model)
        export_onnx(model, out, args.model)
    except (ModelFileError, ExportError, OSError) as exc:
        print(f"prunekd export: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: ONNX opset {OPSET}, BatchNorm folded, input '{INPUT}' (batch, {', '.join(map(str, model.input_shape))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
