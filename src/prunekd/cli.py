"""``prunekd <stage> [options]``: run one pipeline stage (what each dvc.yaml ``cmd`` calls);
``prunekd runs``: print a sweep from MLflow; ``prunekd export``: a model file as ONNX."""

from __future__ import annotations

import importlib
import sys

STAGES = ("check", "prepare", "teacher", "sensitivity", "latency_table", "prune", "retrain", "quantize_teacher", "quantize",
          "latency", "report")
COMMANDS = {"runs": "prunekd.runs", "export": "prunekd.export"} | {stage: f"prunekd.stages.{stage}" for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: prunekd {{{','.join(STAGES)}}} [--params params.yaml] [stage options]\n"
              "       prunekd runs [--sweep latest|RUN_ID|all] [--each]\n"
              "       prunekd export MODEL.pt [--out MODEL.onnx]\n"
              "A stage runs one step of the pipeline (`dvc repro` runs them all); "
              "`runs` prints a sweep from MLflow; `export` writes a model's deploy form as ONNX.", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
