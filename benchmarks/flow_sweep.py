"""Wall time of the study through the Prefect flow with 1 and 2 workers, against `dvc repro`.

    python benchmarks/flow_sweep.py             # the tests' tiny sweep: minutes; prints the figures
    python benchmarks/flow_sweep.py --default   # the default DAG from nothing, three times (each as
                                                # long as `dvc repro` from nothing); writes benchmarks/flow.md

Each run starts from a fresh temporary git copy of this repository (no outputs, an empty DVC cache
and run-cache, its own MLflow store), run the way a user runs it: `dvc repro`, then
`python flows/experiment.py --workers N` (a stage gets cores / N threads). Then, in the last copy,
each with nothing to do: `dvc repro` and the flow, in turns, medians. One run of each: the figures
are one sample each, measured one after the other on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prunekd.sandbox import copy_repo, set_params, tiny_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    """This environment without a team's MLflow or Prefect server: every run is local."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "OMP_", "MKL_")) and k != "PREFECT_API_URL"} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def timed(argv: list[str], repo: Path, log: Path) -> float:
    """Seconds ``argv`` takes in ``repo``; its output goes to ``log``; a failure stops the benchmark."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=repo, env=env(), stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {repo} (exit {code}); see {log}")
    print(f"{' '.join(Path(a).name for a in argv)}: {seconds:.1f} s", flush=True)
    return seconds


def fresh(tmp: Path, name: str, default: bool) -> Path:
    repo = copy_repo(ROOT, tmp / name)
    if not default:
        set_params(repo, tiny_params)
    return repo


def measure(tmp: Path, default: bool, turns: int = 3, repro_seconds: float | None = None) -> dict[str, float]:
    repro = [str(BIN / "dvc"), "repro"]
    flow = lambda workers: [sys.executable, "flows/experiment.py", "--workers", str(workers)]  # noqa: E731
    figures = {"dvc repro from nothing (s)": repro_seconds if repro_seconds is not None
               else timed(repro, fresh(tmp, "repro", default), tmp / "repro.log")}
    for workers in (1, 2):
        repo = fresh(tmp, f"flow{workers}", default)
        figures[f"flow, {workers} worker(s), from nothing (s)"] = timed(flow(workers), repo, tmp / f"flow{workers}.log")
    cached_repro, cached_flow = [], []
    for turn in range(turns):
        cached_repro.append(timed(repro, repo, tmp / "cached-repro.log"))
        cached_flow.append(timed(flow(1), repo, tmp / "cached-flow.log"))
    figures["dvc repro, nothing to do (s, median)"] = statistics.median(cached_repro)
    figures["flow, nothing to do (s, median)"] = statistics.median(cached_flow)
    base = figures["dvc repro from nothing (s)"]
    for workers in (1, 2):
        figures[f"flow, {workers} worker(s) / dvc repro"] = figures[f"flow, {workers} worker(s), from nothing (s)"] / base
    return figures


def markdown(figures: dict[str, float]) -> str:
    lines = ["# The default DAG from nothing: the Prefect flow against `dvc repro`", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}. "
             "Written by `python benchmarks/flow_sweep.py --default`: each figure is one run, from a fresh "
             "copy with an empty DVC cache, run one after the other; the flow with N workers gives each "
             "stage cores / N threads.", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in figures.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--default", action="store_true", help="the default params, and write benchmarks/flow.md")
    p.add_argument("--repro-seconds", type=float, default=None,
                   help="dvc repro's figure from an earlier run of this script on this machine, not measured again")
    args = p.parse_args()
    (ROOT / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".dvc" / "tmp") as tmp:  # inside the project
        figures = measure(Path(tmp), args.default, repro_seconds=args.repro_seconds)
    text = markdown(figures)
    if args.repro_seconds is not None:
        text += ("\n`dvc repro`'s figure is from an earlier run of this script on this machine the same day "
                 "(`--repro-seconds`), not measured beside the flows.\n")
    if args.default:
        (ROOT / "benchmarks" / "flow.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
