"""prunekd's speed figures, each a ratio measured side by side in one run.

    python benchmarks/run.py            # prints the figures and writes benchmarks/results.md

- training throughput of prunekd's loop vs a bare PyTorch loop (same model, batch, threads);
- MobileNet v1 pruned at channel ratios 0.25 / 0.5 / 0.75: CPU latency speedup vs MACs ratio,
  at batch 1 and batch 64;
- time to prune MobileNet v1 and to search a params target;
- `dvc repro` with nothing to do, in this repository (run `dvc repro` once first).
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from prunekd.data import Split
from prunekd.distill import cross_entropy_loss
from prunekd.measure import count_macs_params, cpu_latency_ms, torch_threads
from prunekd.models import build_model
from prunekd.prune import prune, prune_channels
from prunekd.train import Normalization, Schedule, fit

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 28, 28)


def mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mobilenet_v1", 10, SHAPE, 0.5)


def bare_loop(model, split: Split, batch_size: int, epochs: int, lr: float = 0.01, weight_decay: float = 5e-4) -> None:
    """The plainest loop that does the same work: normalize, forward, CE, the same SGD recipe
    (Nesterov momentum, weight decay on weights only, a per-step LR schedule), no bookkeeping."""
    model.train().to(memory_format=torch.channels_last)
    groups = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    steps = epochs * -(-len(split) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    for _ in range(epochs):
        order = torch.randperm(len(split))
        for start in range(0, len(split), batch_size):
            idx = order[start:start + batch_size]
            x = ((split.x[idx].float() / 255 - 0.29) / 0.35).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def throughput(n: int = 6144, batch_size: int = 256, rounds: int = 3) -> dict[str, float]:
    """Both loops on the same model, batch and data, interleaved (A B A B ...) after a warm-up
    of each, so machine noise hits both alike; medians of ``rounds`` one-epoch runs."""
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (n,), generator=gen))
    tiny_val = Split(split.x[:256], split.y[:256])
    norm = Normalization([0.29], [0.35])
    # No augmentation on either side: the same work, so the ratio is the loop's own overhead
    # (ours also validates on 256 images after the epoch and keeps loss/accuracy running sums).
    sched = Schedule(epochs=1, batch_size=batch_size, lr=0.01)
    ours = lambda: timed(lambda: fit(mobilenet(), split, tiny_val, norm, sched, cross_entropy_loss(), 0))  # noqa: E731
    bare = lambda: timed(lambda: bare_loop(mobilenet(), split, batch_size, 1))  # noqa: E731
    ours(), bare()  # warm-up
    times = {"ours": [], "bare": []}
    for _ in range(rounds):
        times["ours"].append(ours())
        times["bare"].append(bare())
    t_ours, t_bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    return {"prunekd loop img/s": n / t_ours, "bare loop img/s": n / t_bare, "ratio": t_bare / t_ours}


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


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """The deploy-time form: each conv + BatchNorm + ReLU fused into one conv-ReLU (eval only)."""
    model = copy.deepcopy(model).eval()
    triples = [[f"{name}.0", f"{name}.1", f"{name}.2"] for name, m in model.named_modules()
               if isinstance(m, torch.nn.Sequential) and len(m) == 3
               and isinstance(m[0], torch.nn.Conv2d) and isinstance(m[1], torch.nn.BatchNorm2d)]
    return torch.ao.quantization.fuse_modules(model, triples)


def latency_profile(threads: int = 1) -> list[dict[str, float]]:
    """Where batch-1 time goes: operators run, time inside convolutions vs the whole forward,
    and the speedup at channel ratio 0.5 with and without BatchNorm folded into the convs."""
    from torch.profiler import ProfilerActivity, profile

    base = mobilenet().eval()
    pruned = prune_channels(base, 0.5, "l1").eval()
    macs_ratio = count_macs_params(base)[0] / count_macs_params(pruned)[0]
    rows = []
    for label, fold in (("as trained", lambda m: m), ("BatchNorm folded", fold_batchnorm)):
        b, q = fold(base), fold(pruned)
        base_ms, pruned_ms = cpu_latency_ms(b, threads, 10, 50), cpu_latency_ms(q, threads, 10, 50)
        x = torch.randn(1, *SHAPE).contiguous(memory_format=torch.channels_last)
        with torch_threads(threads), torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                b.to(memory_format=torch.channels_last)(x)
        events = prof.key_averages()
        conv_us = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower())
        total_us = sum(e.self_cpu_time_total for e in events)
        rows.append({"model": label, "ops per forward": sum(e.count for e in events if e.key.startswith("aten::")) / 20,
                     "share of time in convolution kernels": conv_us / total_us,
                     "base ms": base_ms, "pruned ms": pruned_ms, "speedup": base_ms / pruned_ms,
                     "speedup / MACs ratio": base_ms / pruned_ms / macs_ratio})
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


def markdown(figures: dict, latency: list[dict], profile_rows: list[dict]) -> str:
    lines = ["# prunekd benchmarks", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch threads.", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures.items()]
    lines += ["", "Latency speedup vs MACs ratio (MobileNet v1 width 0.5, 28x28, L1 channel pruning):", "",
              "| batch | channel ratio | MACs ratio | speedup | base ms | pruned ms |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(f"{v:.3g}" for v in row.values()) + " |" for row in latency]
    lines += ["", "Batch-1 latency profile (1 thread; channel ratio 0.5 for the speedup):", "",
              "| " + " | ".join(profile_rows[0]) + " |", "|" + "---|" * len(profile_rows[0])]
    lines += ["| " + " | ".join(v if isinstance(v, str) else f"{v:.3g}" for v in row.values()) + " |"
              for row in profile_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    figures = {}
    tp = throughput()
    figures.update({f"train: {k}": v for k, v in tp.items()})
    figures.update(prune_times())
    figures.update(dvc_noop())
    latency = latency_vs_macs(threads=1)
    text = markdown(figures, latency, latency_profile(threads=1))
    (ROOT / "benchmarks" / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
