"""``prunekd <stage> [options]``: run one pipeline stage (what each dvc.yaml ``cmd`` calls)."""

from __future__ import annotations

import importlib
import sys

STAGES = ("prepare", "teacher", "prune", "retrain", "report")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        print(f"usage: prunekd {{{','.join(STAGES)}}} [--params params.yaml] [stage options]\n"
              "Runs one stage of the pipeline; `dvc repro` runs them all.", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"prunekd.stages.{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
