"""prunekd's speed figures, each a ratio measured side by side in one run.

    python benchmarks/run.py            # prints the figures and writes benchmarks/results.md

- training throughput of prunekd's loop vs a bare PyTorch loop (same model, batch, threads), and
  of prunekd's loop in the layout it picks on the CPU (channels_last) vs NCHW, and in bf16 vs fp32;
- MobileNet v1 pruned at channel ratios 0.25 / 0.5 / 0.75 with channels rounded to multiples of
  1, 8 and 16: latency speedup vs MACs ratio on ONNX Runtime and eager PyTorch, at batch 1 and
  batch 64, and where ONNX Runtime's batch-1 time goes (its profiler, per operator type);
- time to prune MobileNet v1 and to search a params target;
- `dvc repro` and the Prefect flow with nothing to do, in this repository (reproduce it first:
  otherwise they run the whole pipeline).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunekd.data import Split
from prunekd.distill import cross_entropy_loss
from prunekd.export import export_onnx
from prunekd.latency import SPEEDUP_COLUMNS, Architecture, latency_table
from prunekd.models import build_model
from prunekd.prune import prune
from prunekd.report import speedup_cell
from prunekd.config import MeasureConfig, TrainConfig
from prunekd.train import AUTOCAST, Normalization, fit

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
    sched = TrainConfig(epochs=1, batch_size=batch_size, lr=0.01, hflip=False)
    ours = lambda: timed(lambda: fit(mobilenet(), split, tiny_val, norm, sched, cross_entropy_loss(), 0))  # noqa: E731
    bare = lambda: timed(lambda: bare_loop(mobilenet(), split, batch_size, 1))  # noqa: E731
    ours(), bare()  # warm-up
    times = {"ours": [], "bare": []}
    for _ in range(rounds):
        times["ours"].append(ours())
        times["bare"].append(bare())
    t_ours, t_bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    return {"prunekd loop img/s": n / t_ours, "bare loop img/s": n / t_bare, "ratio": t_bare / t_ours}


def loop_choices(n: int = 6144, batch_size: int = 256, rounds: int = 3) -> dict[str, float]:
    """What the loop's device choices are worth on this CPU: prunekd's loop (``benchmarks/gpu.py``'s
    probe, augmentation on) in channels_last, the layout it picks here, against NCHW, and under
    bf16 autocast against fp32; the three in turns, medians of ``rounds`` timed epochs."""
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu import layout, loop_throughput

    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (n,), generator=gen))
    sched = TrainConfig(epochs=2, batch_size=batch_size, lr=0.05, translate=1, hflip=False)
    variants = {"channels_last fp32": (torch.channels_last, None), "nchw fp32": (torch.contiguous_format, None),
                "channels_last bf16": (torch.channels_last, AUTOCAST["bf16"])}
    speed = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fmt, autocast) in variants.items():
            with layout(fmt):
                speed[name].append(loop_throughput(mobilenet(), split, Normalization([0.29], [0.35]), sched,
                                                   torch.device("cpu"), autocast))
    img_s = {name: statistics.median(v) for name, v in speed.items()}
    return {"loop channels_last img/s": img_s["channels_last fp32"], "loop NCHW img/s": img_s["nchw fp32"],
            "loop NCHW / channels_last": img_s["nchw fp32"] / img_s["channels_last fp32"],
            "loop bf16 / fp32 (channels_last)": img_s["channels_last bf16"] / img_s["channels_last fp32"]}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def exported(models: dict[str, torch.nn.Module], folder: Path) -> list[Architecture]:
    return [Architecture(i, m, export_onnx(m, folder / f"{name}.onnx")) for i, (name, m) in enumerate(models.items())]


def latency_rounding(threads: int = 1) -> list[dict]:
    """Speedup over the unpruned model against its MACs ratio, with prune.round_to 1, 8 and 16, on
    each runtime at batch 1 and 64, for MobileNet v1 pruned two ways: at channel ratios 0.25 / 0.5 /
    0.75 (every layer loses that share), and at the default run's targets, 26 / 50 / 75 % of the
    params removed (the channel ratio searched). Plus the floor: every layer cut to 16 filters, so
    that nearly all that is left is the fixed cost of a pass. All networks are timed in turns in
    one table (the pipeline's latency stage, unchanged)."""
    base = mobilenet().eval()
    models = {"teacher": base}
    for k in (1, 8, 16):
        models |= {f"channels {r}/{k}": prune(base, r, "channels", "l1", round_to=k).model for r in (0.25, 0.5, 0.75)}
    for k in (1, 16):
        models |= {f"params {r}/{k}": prune(base, r, "params", "l1", round_to=k).model for r in (0.26, 0.5, 0.75)}
    models["floor/16"] = prune(base, 0.99, "channels", "l1", round_to=16).model
    with tempfile.TemporaryDirectory() as folder:
        archs = exported(models, Path(folder))
        measure = MeasureConfig(runtimes=["onnxruntime", "torch"], batch_sizes=[1, 64], threads=threads, warmup=10,
                                repeats=200, rounds=10)
        rows = latency_table(archs, measure)
    names = list(models)
    teacher_ms = {(r["runtime"], r["batch"]): r["median_ms"] for r in rows if names[int(r["ratio"])] == "teacher"}
    out = []
    for row in rows:
        name = names[int(row["ratio"])]
        if name == "teacher":
            continue
        pruned, round_to = name.rsplit("/", 1)
        per_macs = {k: row[k] / row["macs_ratio"] for k in SPEEDUP_COLUMNS}  # "_": not shown (``table``)
        out.append({"runtime": row["runtime"], "batch": row["batch"], "pruned": pruned, "round_to": round_to,
                    "MACs ratio": row["macs_ratio"], "speedup [95 %]": speedup_cell(row),
                    "speedup / MACs ratio [95 %]": speedup_cell(per_macs),
                    "teacher us": 1000 * teacher_ms[row["runtime"], row["batch"]], "pruned us": 1000 * row["median_ms"],
                    "_per_macs": per_macs})
    return out


def where_time_goes(latency: list[dict], pruned: str = "channels 0.5") -> list[dict]:
    """At channel ratio 0.5 (round_to 16), per runtime and batch: how much of the pruned network's
    time is the floor (the fixed cost of a pass, which no pruning removes), and how the time above
    the floor scales against the MACs ratio."""
    rows = []
    for runtime, batch in dict.fromkeys((r["runtime"], r["batch"]) for r in latency):
        cell = {r["pruned"]: r for r in latency if (r["runtime"], r["batch"], r["round_to"]) == (runtime, batch, "16")}
        one, floor = cell[pruned], cell["floor"]
        teacher = one["teacher us"]
        rows.append({"runtime": runtime, "batch": batch, "teacher us": teacher, "pruned us": one["pruned us"],
                     "floor us": floor["pruned us"], "floor share of pruned": floor["pruned us"] / one["pruned us"],
                     "above-floor speedup / MACs ratio":
                         (teacher - floor["pruned us"]) / (one["pruned us"] - floor["pruned us"]) / one["MACs ratio"]})
    return rows


def prune_times() -> dict[str, float]:
    base = mobilenet()
    prune(base, 0.1, "channels", "l1")  # warm-up: first-call costs of the tracer
    return {"prune MobileNet v1 at channel ratio 0.5 (s)": timed(lambda: prune(base, 0.5, "channels", "l1").model),
            "search + prune to 26 % fewer params (s)": timed(lambda: prune(base, 0.26, "params", "l1"))}


def cached_reruns(turns: int = 3) -> dict[str, float]:
    """With every stage already reproduced: `dvc repro` and the Prefect flow, each with nothing to do,
    in turns, each a fresh process (the flow's figure includes Python start-up and Prefect's local
    API); medians. Target: the flow within 10 s of `dvc repro`."""
    bin_ = Path(sys.executable).parent
    status = subprocess.run([str(bin_ / "dvc"), "status", "--json"], cwd=ROOT, capture_output=True, text=True)
    if status.stdout.strip() not in ("{}", ""):
        raise SystemExit("benchmarks: the DAG is not up to date; run `dvc repro` first")
    run = lambda *cmd: subprocess.run([*cmd], cwd=ROOT, check=True, capture_output=True)  # noqa: E731
    repro, flow = [], []
    for _ in range(turns):
        repro.append(timed(lambda: run(str(bin_ / "dvc"), "repro")))
        flow.append(timed(lambda: run(sys.executable, "flows/experiment.py")))
    r, f = statistics.median(repro), statistics.median(flow)
    return {"dvc repro, nothing to do (s)": r, "Prefect flow, fully cached rerun (s)": f,
            "flow minus dvc repro (s; target <= 10)": f - r}


def table(rows: list[dict]) -> list[str]:
    cell = lambda v: v if isinstance(v, str) else f"{v:.3g}"  # noqa: E731
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if not k.startswith("_")]
    return (["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            + ["| " + " | ".join(cell(row[k]) if k in row else "" for k in keys) + " |" for row in rows])


def markdown(figures: dict, latency: list[dict], profile_rows: list[dict]) -> str:
    target = next(r for r in latency if (r["runtime"], r["batch"], r["pruned"], r["round_to"])
                  == ("onnxruntime", 1, "channels 0.5", "16"))
    lines = ["# prunekd benchmarks", "",
             f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch threads.", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures.items()]
    lines += ["", "Latency speedup over the unpruned model vs its MACs ratio (MobileNet v1 width 0.5, 28x28, "
              "L1 pruning at channel ratios and at the default run's params targets, with `prune.round_to` 1, "
              "8, 16; 1 thread; the deploy form, BatchNorm folded, as the latency stage times it; all "
              "networks timed in turns, each turn on a fresh session or folded model; speedups paired by round, with their 95 % "
              "interval over the rounds, this run's timing noise):", ""] + table(latency)
    sys.path.insert(0, str(Path(__file__).parent))
    from int8 import verdict  # a target read from an interval, as the int8 benchmark reads its own

    point, low, high = (target["_per_macs"][k] for k in SPEEDUP_COLUMNS)
    lines += ["", f"Target: on ONNX Runtime at batch 1, channel ratio 0.5 (round_to 16) reaches "
              f"{point:.2f} [95 %: {low:.2f}, {high:.2f}] of its MACs ratio (target 0.7: {verdict(low, high, 0.7)}).", ""]
    lines += ["Where the time goes at channel ratio 0.5 (round_to 16): the floor is the same network with "
              "every layer cut to 16 filters, nearly all fixed cost (per-operator dispatch, the call itself):",
              ""] + table(profile_rows)
    return "\n".join(lines) + "\n"


def main() -> None:
    figures = {}
    tp = throughput()
    figures.update({f"train: {k}": v for k, v in tp.items()})
    figures.update({f"train: {k}": v for k, v in loop_choices().items()})
    figures.update(prune_times())
    figures.update(cached_reruns())
    latency = latency_rounding(threads=1)
    text = markdown(figures, latency, where_time_goes(latency))
    (ROOT / "benchmarks" / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
