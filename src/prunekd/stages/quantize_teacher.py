"""quantize_teacher: the teacher's int8 form on ONNX Runtime (the quantize stage's recipe)."""

from __future__ import annotations

from ..config import Params
from ..paths import Layout
from .cli import run_cli
from .quantize import quantize_folder


def run(params: Params, layout: Layout) -> dict[str, float]:
    return quantize_folder("quantize_teacher", layout.teacher, params, layout)


def main(argv: list[str] | None = None) -> int:
    return run_cli("quantize_teacher", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
