"""prunekd's speed figures, each a ratio measured side by side in one run.

    python benchmarks/run.py            # prints the figures and writes benchmarks/results.md

- training throughput of prunekd's loop vs a bare PyTorch loop (same model, batch, threads);
- MobileNet v1 pruned at channel ratios 0.25 / 0.5 / 0.75: CPU latency speedup vs MACs ratio,
  at batch 1 and batch 64;
- time to prune MobileNet v1 and to search a params target;
- `dvc repro` with nothing to do, in this repository (run `dvc repro` once first).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from prunekd.data import Split
from prunekd.distill import cross_entropy_loss
from prunekd.measure import count_macs_params, cpu_latency_ms
from prunekd.models import build_model
from prunekd.prune import prune, prune_channels
from prunekd.train import Normalization, Schedule, fit

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 28, 28)


def mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mobilenet_v1", 10, SHAPE, 0.5)


def bare_loop(model, split: Split, batch_size: int, epochs: int) -> None:
    """The plainest loop that does the same work: normalize, forward, CE, SGD step."""
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(epochs):
        order = torch.randperm(len(split))
        for start in range(0, len(split), batch_size):
            idx = order[start:start + batch_size]
            x = ((split.x[idx].float() / 255 - 0.29) / 0.35).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def throughput(n: int = 6144, batch_size: int = 256) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (n,), generator=gen))
    tiny_val = Split(split.x[:256], split.y[:256])
    norm = Normalization([0.29], [0.35])
    # No augmentation on either side: the same work, so the ratio is the loop's own overhead.
    sched = Schedule(epochs=2, batch_size=batch_size, lr=0.01)
    ours = timed(lambda: fit(mobilenet(), split, tiny_val, norm, sched, cross_entropy_loss(), 0))
    bare = timed(lambda: bare_loop(mobilenet(), split, batch_size, 2))
    return {"prunekd loop img/s": 2 * n / ours, "bare loop img/s": 2 * n / bare, "ratio": bare / ours}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency_vs_macs(threads: int) -> list[dict[str, float]]:
    base = mobilenet().eval()
    base_macs = count_macs_params(base)[0]
    rows = []
    for batch in (1, 64):
        base_ms = cpu_latency_ms(base, threads, 5, 30, batch)
        for ratio in (0.25, 0.5, 0.75):
            pruned = prune_channels(base, ratio, "l1")
            ms = cpu_latency_ms(pruned, threads, 5, 30, batch)
            rows.append({"batch": batch, "channel ratio": ratio, "MACs ratio": base_macs / count_macs_params(pruned)[0],
                         "speedup": base_ms / ms, "base ms": base_ms, "pruned ms": ms})
    return rows


def prune_times() -> dict[str, float]:
    base = mobilenet()
    prune_channels(base, 0.1, "l1")  # warm-up: first-call costs of the tracer
    return {"prune MobileNet v1 at channel ratio 0.5 (s)": timed(lambda: prune_channels(base, 0.5, "l1")),
            "search + prune to 26 % fewer params (s)": timed(lambda: prune(base, 0.26, "params", "l1"))}


def dvc_noop() -> dict[str, float]:
    dvc = Path(sys.executable).parent / "dvc"
    seconds = timed(lambda: subprocess.run([str(dvc), "repro"], cwd=ROOT, check=True, capture_output=True))
    return {"dvc repro, nothing to do (s)": seconds}


def markdown(figures: dict, latency: list[dict]) -> str:
    lines = ["# prunekd benchmarks", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch threads.", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures.items()]
    lines += ["", "Latency speedup vs MACs ratio (MobileNet v1 width 0.5, 28x28, L1 channel pruning):", "",
              "| batch | channel ratio | MACs ratio | speedup | base ms | pruned ms |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(f"{v:.3g}" for v in row.values()) + " |" for row in latency]
    return "\n".join(lines) + "\n"


def main() -> None:
    figures = {}
    tp = throughput()
    figures.update({f"train: {k}": v for k, v in tp.items()})
    figures.update(prune_times())
    figures.update(dvc_noop())
    latency = latency_vs_macs(threads=1)
    text = markdown(figures, latency)
    (ROOT / "benchmarks" / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
