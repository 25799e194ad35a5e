"""Wall time of the tiny sweep through the Prefect flow: 1 vs 2 workers, and a fully cached rerun.

    python benchmarks/flow_sweep.py

Each run starts from a fresh temporary git copy of this repository with the test suite's tiny
params (1,000 Fashion-MNIST images, 2 ratios x {ft, kd}); prints one line per figure.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prunekd.sandbox import copy_repo, load_flow_module, set_params, tiny_params

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    flows = load_flow_module(ROOT)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            repo = copy_repo(ROOT, Path(tmp) / f"w{workers}")
            set_params(repo, tiny_params)
            run = flows.configured(workers=workers)
            figures[f"tiny sweep, {workers} worker(s)"] = timed(lambda: run(root=str(repo), workers=workers))
        figures["fully cached rerun"] = timed(lambda: flows.configured()(root=str(repo)))
    for name, seconds in figures.items():
        print(f"{name}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
