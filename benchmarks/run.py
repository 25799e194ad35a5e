"""prunekd's speed figures, each a ratio measured side by side in one run.

    python benchmarks/run.py            # prints the figures and writes benchmarks/results.md

- training throughput of prunekd's loop vs a bare PyTorch loop (same model, batch, threads);
- MobileNet v1 pruned at channel ratios 0.25 / 0.5 / 0.75: CPU latency speedup vs MACs ratio,
  at batch 1 and batch 64, and where the time goes (BatchNorm, the fixed cost of a pass);
- time to prune MobileNet v1 and to search a params target;
- `dvc repro` and the Prefect flow with nothing to do, in this repository (reproduce it first:
  otherwise they run the whole pipeline).
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
from prunekd.measure import count_macs_params, cpu_latencies_ms, fold_batchnorm, torch_threads
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
    """Base and pruned models timed in turns (as the pipeline measures them: BatchNorm folded,
    channels_last, fixed threads), so the speedup is a ratio taken under the same conditions."""
    base = mobilenet().eval()
    ratios = (0.25, 0.5, 0.75)
    models = [base] + [prune_channels(base, r, "l1") for r in ratios]
    macs = [count_macs_params(m)[0] for m in models]
    rows = []
    for batch in (1, 64):
        ms = cpu_latencies_ms(models, threads, 10, 60 if batch == 1 else 20, batch, rounds=10)
        rows += [{"batch": batch, "channel ratio": r, "MACs ratio": macs[0] / macs[i + 1],
                  "speedup": ms[0] / ms[i + 1], "speedup / MACs ratio": ms[0] / ms[i + 1] / (macs[0] / macs[i + 1]),
                  "base ms": ms[0], "pruned ms": ms[i + 1]} for i, r in enumerate(ratios)]
    return rows


def latency_profile(threads: int = 1) -> list[dict]:
    """Where the time goes at channel ratio 0.5, per batch size:

    - eager (BatchNorm a separate op) vs the deploy form the pipeline measures (BatchNorm folded);
    - at batch 1, the fixed cost of a forward pass: the same network with every layer cut to one
      or two filters, so that nearly all that is left is per-operator overhead; the speedup of the
      time above that floor, over the MACs ratio, is how well the compute itself scales. (At batch
      64 such thin layers fall off the fast kernels, so that floor would mean nothing there.)
    """
    from torch.profiler import ProfilerActivity, profile

    base = mobilenet().eval()
    pruned = prune_channels(base, 0.5, "l1").eval()
    floor = prune_channels(base, 0.97, "l1").eval()
    macs_ratio = count_macs_params(base)[0] / count_macs_params(pruned)[0]
    rows = []
    for batch in (1, 64):
        repeats = 60 if batch == 1 else 20
        eager_base, eager_pruned = (eager_latency_ms(m, threads, batch, repeats) for m in (base, pruned))
        base_ms, pruned_ms, floor_ms = cpu_latencies_ms([base, pruned, floor], threads, 10, repeats, batch,
                                                        rounds=10)
        rows.append({"batch": batch,
                     "eager speedup / MACs ratio": eager_base / eager_pruned / macs_ratio,
                     "deploy speedup / MACs ratio": base_ms / pruned_ms / macs_ratio,
                     "eager base ms": eager_base, "eager pruned ms": eager_pruned,
                     "deploy base ms": base_ms, "deploy pruned ms": pruned_ms})
        if batch == 1:
            rows[-1] |= {"floor ms": floor_ms, "floor share of pruned": floor_ms / pruned_ms,
                         "above-floor speedup / MACs ratio": (base_ms - floor_ms) / (pruned_ms - floor_ms) / macs_ratio}
    x = torch.randn(1, *SHAPE).contiguous(memory_format=torch.channels_last)
    deployed = fold_batchnorm(pruned).to(memory_format=torch.channels_last)
    with torch_threads(threads), torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            deployed(x)
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower())
    rows[0]["batch-1 share of time in convolution ops"] = conv_us / sum(e.self_cpu_time_total for e in events)
    return rows


@torch.inference_mode()
def eager_latency_ms(model: torch.nn.Module, threads: int, batch: int, repeats: int) -> float:
    """Median forward time of the model as trained (BatchNorm not folded), channels_last."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, *SHAPE).contiguous(memory_format=torch.channels_last)
    with torch_threads(threads):
        for _ in range(10):
            model(x)
        return 1000 * statistics.median(timed(lambda: model(x)) for _ in range(repeats))


def prune_times() -> dict[str, float]:
    base = mobilenet()
    prune_channels(base, 0.1, "l1")  # warm-up: first-call costs of the tracer
    return {"prune MobileNet v1 at channel ratio 0.5 (s)": timed(lambda: prune_channels(base, 0.5, "l1")),
            "search + prune to 26 % fewer params (s)": timed(lambda: prune(base, 0.26, "params", "l1"))}


def cached_reruns() -> dict[str, float]:
    """With every stage already reproduced: `dvc repro` and the Prefect flow, each with nothing to do
    (the flow's figure includes Python start-up and Prefect's local server)."""
    bin_ = Path(sys.executable).parent
    run = lambda *cmd: subprocess.run([*cmd], cwd=ROOT, check=True, capture_output=True)  # noqa: E731
    return {"dvc repro, nothing to do (s)": timed(lambda: run(str(bin_ / "dvc"), "repro")),
            "Prefect flow, fully cached rerun (s)": timed(lambda: run(sys.executable, "flows/experiment.py"))}


def table(rows: list[dict]) -> list[str]:
    cell = lambda v: v if isinstance(v, str) else f"{v:.3g}"  # noqa: E731
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return (["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            + ["| " + " | ".join(cell(row[k]) if k in row else "" for k in keys) + " |" for row in rows])


def markdown(figures: dict, latency: list[dict], profile_rows: list[dict]) -> str:
    lines = ["# prunekd benchmarks", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch threads.", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures.items()]
    lines += ["", "Latency speedup vs MACs ratio (MobileNet v1 width 0.5, 28x28, L1 channel pruning; "
              "1 thread; BatchNorm folded, as the pipeline measures):", ""] + table(latency)
    lines += ["", "Where the time goes at channel ratio 0.5 (1 thread):", ""] + table(profile_rows)
    return "\n".join(lines) + "\n"


def main() -> None:
    figures = {}
    tp = throughput()
    figures.update({f"train: {k}": v for k, v in tp.items()})
    figures.update(prune_times())
    figures.update(cached_reruns())
    latency = latency_vs_macs(threads=1)
    text = markdown(figures, latency, latency_profile(threads=1))
    (ROOT / "benchmarks" / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
