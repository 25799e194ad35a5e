"""A fully cached Prefect flow run against `dvc repro` with nothing to do, on this repository.

    python benchmarks/flow_cached.py [--turns 3]

Run it after `dvc repro` (the DAG must be up to date: it refuses otherwise). Each turn runs
`dvc repro` and then `python flows/experiment.py` (what a user types; the flow starts its own
Prefect API), each as a fresh process; prints the median wall time of each and the difference.
Target: the flow within 10 s of `dvc repro`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=3)
    turns = p.parse_args().turns
    status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=ROOT, capture_output=True, text=True)
    if status.stdout.strip() not in ("{}", ""):
        raise SystemExit("the DAG is not up to date: run `dvc repro` first")
    stages = len(subprocess.run([str(BIN / "dvc"), "stage", "list", "--all"], cwd=ROOT, capture_output=True,
                                text=True).stdout.splitlines())
    repro, flow = [], []
    for _ in range(turns):
        repro.append(timed([str(BIN / "dvc"), "repro"]))
        flow.append(timed([sys.executable, str(ROOT / "flows" / "experiment.py")]))
    r, f = statistics.median(repro), statistics.median(flow)
    print(f"{stages} stages, median of {turns} turns")
    print(f"dvc repro, nothing to do: {r:.1f} s")
    print(f"flow, fully cached:       {f:.1f} s  ({f - r:+.1f} s, {f / r:.1f}x)")


if __name__ == "__main__":
    main()
