"""How well the latency lookup table (prunekd.latency_table) predicts a pruned network's time on
ONNX Runtime: the table of the default teacher's architecture, then random plans of layer widths
on its grid, the uniform plans, and the plans the search (prunekd.latency_plan) makes for 26, 50
and 75 % of the predicted time removed, each predicted and timed. None of them is among the
networks the table's calibration was fitted over, but the unpruned one.

    python benchmarks/latency_table.py [--stride 2]   # writes benchmarks/latency_table.md (minutes, 1 thread)

``--stride k`` measures every k-th step of each layer's grid (and its last) and interpolates
between them: about k² times fewer networks to profile.

Every plan is timed as the latency stage times a network: its deploy form, batch 1, one thread,
the plans taking turns (prunekd.latency.times_in_turns), the median. A prediction's error is
(predicted - measured) / measured.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from prunekd.config import load_params
from prunekd.latency import RUNTIMES, times_in_turns
from prunekd.latency_plan import latency_plan
from prunekd.latency_table import TableError, measure, steps
from prunekd.export import export_onnx
from prunekd.models import build_model
from prunekd.prune import shaped

ROOT = Path(__file__).resolve().parents[1]


def plans(channels: list[int], round_to: int, n_random: int, seed: int = 0) -> dict[str, list[int]]:
    """Uniform plans (every layer at the same fraction of its grid) and random ones."""
    rng = random.Random(seed)
    grids = [steps(c, round_to) for c in channels]
    out = {f"uniform {f:.2f}": [g[max(0, round(f * len(g)) - 1)] for g in grids] for f in (1.0, 0.75, 0.5, 0.25)}
    out.update({f"random {i}": [rng.choice(g) for g in grids] for i in range(n_random)})
    return out


def measured(model, widths: dict[str, list[int]], folder: Path, repeats: int = 200, rounds: int = 5) -> dict[str, float]:
    x = np.zeros((1, *model.input_shape), dtype=np.float32)
    makers = []
    for name, plan in widths.items():
        net = shaped(model, plan)
        onnx = export_onnx(net, folder / f"{len(makers)}.onnx")
        makers.append(partial(RUNTIMES["onnxruntime"], net, onnx, x, 1))
    samples = times_in_turns(makers, warmup=20, repeats=repeats, rounds=rounds)
    return {name: float(np.median(s)) * 1000 for name, s in zip(widths, samples)}  # ms -> us


def main() -> None:
    import argparse

    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stride", type=int, default=2, help="measure every k-th step (default 2)")
    args = p.parse_args()
    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml")
    model = build_model(params.model.arch, 10, (1, 28, 28), params.model.width)
    round_to = params.prune.round_to
    with tempfile.TemporaryDirectory(dir=ROOT / ".dvc" / "tmp") as tmp:
        start = time.perf_counter()
        table = measure(model, round_to=round_to, batch=1, threads=1, runs=50, stride=args.stride, folder=Path(tmp))
        build_s = time.perf_counter() - start
        chosen = plans(model.channels(), round_to, n_random=20)
        full_us = table.predict(model.channels())
        targets, unreachable = {}, {}
        for r in (0.26, 0.5, 0.75):
            try:
                chosen[f"latency {r:.0%} off"] = latency_plan(table, (1 - r) * full_us)
                targets[f"latency {r:.0%} off"] = r
            except TableError as exc:
                unreachable[r] = str(exc)
        times = measured(model, chosen, Path(tmp))
    rows = []
    for name, plan in chosen.items():
        predicted = table.predict(plan)
        rows.append((name, times[name], predicted, (predicted - times[name]) / times[name]))
    errors = np.abs([r[3] for r in rows])
    # what a search reads off the table: a plan's share of the unpruned network's time
    full_measured, full_predicted = times["uniform 1.00"], table.predict(model.channels())
    share_errors = np.abs([(p / full_predicted) / (m / full_measured) - 1 for name, m, p, _ in rows
                           if name != "uniform 1.00"])
    cal = table.calibration
    lines = ["# The latency lookup table: predicted against measured", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; "
             f"ONNX Runtime, batch 1, 1 thread. Written by `python benchmarks/latency_table.py`.", "",
             f"The default teacher's architecture ({params.model.arch}, width {params.model.width}, layers "
             f"{model.channels()}), widths in steps of {round_to}: {len(table.us)} operators, "
             f"{sum(len(v) for v in table.us.values())} entries (every {args.stride} steps, interpolated between), "
             f"in {build_s:.0f} s. Calibration over {cal.n} whole networks (prunekd.latency_table.calibration_plans, "
             f"none of them among the plans below but the unpruned one): log time = {cal.intercept:.3f} "
             f"{cal.slope:+.3f} x {cal.curvature:+.4f} x², x the log of the sum of profiled operator times, R² "
             f"{cal.r2:.3f} of the logs.",
             "", f"Absolute prediction error over {len(rows)} plans: median {np.median(errors):.1%}, "
             f"90th percentile {np.percentile(errors, 90):.1%}, largest {errors.max():.1%}. Of a plan's share of the "
             f"unpruned network's time (predicted share over measured share, less 1; what a search reads off the "
             f"table): median {np.median(share_errors):.1%}, 90th percentile {np.percentile(share_errors, 90):.1%}, "
             f"largest {share_errors.max():.1%}.", "",
             "| plan | measured us | predicted us | error |", "|---|---|---|---|"]
    lines += [f"| {name} | {m:.1f} | {p:.1f} | {e:+.1%} |" for name, m, p, e in rows]
    full = times["uniform 1.00"]
    lines += ["", "The search's plans against their targets (time removed, of the unpruned network's measured time):",
              "", "| plan | widths | target removed | measured removed |", "|---|---|---|---|"]
    lines += [f"| {name} | {chosen[name]} | {r:.0%} | {1 - times[name] / full:.1%} |" for name, r in targets.items()]
    lines += [f"| latency {r:.0%} off | unreachable: {why} | {r:.0%} | |" for r, why in unreachable.items()]
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "latency_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
