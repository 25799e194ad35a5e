"""int8 against fp32 on ONNX Runtime, per network, with and without each quantisation option.

    python benchmarks/int8.py [--project .] [--threads 1] [--out benchmarks/int8.md]

Reads a project after `dvc repro` (the teacher, and per ratio its first kd model, else its pruned
network; the prepared data for calibration and test images). For each network: the quantize
stage's recipe and the alternatives it was chosen over (prunekd.quantize.quantize_onnx's options),
each form's test top-1 on ONNX Runtime, and its time at batch 1 and 64 against the fp32 form, all
forms of one network timed in turns in this process. Each figure has its 95 % interval: a form's
change in top-1 over the test images (paired with the fp32 form, image by image), its speedup over
the rounds it was timed in (the latency stage's estimate: ``prunekd.latency.speedup_in_turns``);
a target is said met or missed only where the interval is on one side of it. Then where the time
goes: ONNX Runtime's own profile of the fp32 and int8 forms at batch 64, summed per operator type.

Run it on a quiet machine (nothing else on the cores): the figures are ratios measured side by
side, but a busy neighbour still shifts them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from prunekd.config import Params, load_params  # noqa: E402
from prunekd.data import load_prepared, normalize  # noqa: E402
from prunekd.interval import paired_t  # noqa: E402
from prunekd.latency import RUNTIMES, round_sizes, speedup_in_turns, times_in_turns  # noqa: E402
from prunekd.quantize import calibration_images, onnx_predictions, quantize_onnx  # noqa: E402

# option name -> quantize_onnx keywords (and "method": quantize.method); "recipe" is the quantize stage's
VARIANTS = {
    "recipe": {},
    "entropy calibration": {"method": "entropy"},
    "percentile calibration": {"method": "percentile"},
    "no pre-processing": {"preprocess": False},
    "QOperator format": {"operator_format": True},
    "only Conv quantised": {"op_types": ["Conv"]},
    "int8 activations": {"int8_activations": True},
    "depthwise left fp32": {"skip_depthwise": True},
}
TARGETS = {1: 1.2, 64: 1.5}  # int8 speedup over fp32 wanted at these batch sizes (teacher, 26 % and 50 %)
TOLERANCE = 0.3  # top-1 points int8 may lose
ROUNDS = 10  # every form of a network takes this many turns per batch size


INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # the x86 instructions int8 kernels use


def cpu() -> str:
    """The CPU's model name and which of INT8_FLAGS it has (Linux's /proc/cpuinfo; elsewhere what
    ``platform`` says): int8's speed, and on CPUs without VNNI its accuracy, depend on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    return f"{name} ({', '.join(f for f in INT8_FLAGS if f in flags) or 'none of ' + ', '.join(INT8_FLAGS)})"


def verdict(low: float, high: float, goal: float) -> str:
    """A target read from a 95 % interval: met where the interval is at or above it, missed where
    it is below it, and neither shown where it straddles it."""
    return "met" if low >= goal else "not met" if high < goal else "not shown either way"


def cell(value: float, low: float, high: float, fmt: str) -> str:
    """``value [low, high]`` in ``fmt``."""
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def networks(project: Path) -> dict[str, Path]:
    """label -> fp32 ONNX file: the teacher, then per pruned ratio its first kd model (else the pruned one)."""
    out = {"teacher": project / "models" / "teacher" / "model.onnx"}
    for folder in sorted((project / "models" / "pruned").iterdir(), key=lambda p: float(p.name)):
        trained = project / "models" / "retrained" / f"{folder.name}-kd-0" / "model.onnx"
        out[f"{float(folder.name) * 100:g} %"] = trained if trained.is_file() else folder / "model.onnx"
    return out


def conv_kinds(optimized: Path) -> dict[str, str]:
    """Node name -> "depthwise" or "dense" for each convolution of the graph ONNX Runtime runs."""
    import onnx

    kinds = {}
    for node in onnx.load(str(optimized)).graph.node:
        if "Conv" in node.op_type:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kinds[node.name] = "depthwise" if group > 1 else "dense"
    return kinds


def profile(onnx_file: Path, x: np.ndarray, threads: int, passes: int, folder: Path) -> dict[str, float]:
    """µs per pass spent in each operator type (convolutions split into depthwise and dense), from
    ONNX Runtime's profiler, on the graph it runs after its own optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling, options.profile_file_prefix = True, str(folder / onnx_file.stem)
    options.optimized_model_filepath = str(folder / f"{onnx_file.stem}.optimized.onnx")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    kinds = conv_kinds(Path(options.optimized_model_filepath))
    feed = {session.get_inputs()[0].name: x}
    for _ in range(passes):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            op = e["args"]["op_name"] + (f" ({kinds[node]})" if node in kinds else "")
            per_op[op] += e["dur"] / passes
    return dict(per_op)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=Path, default=ROOT)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=300, help="passes per form at batch 1 (a fifth at batch 64)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8.md")
    args = p.parse_args()

    params = load_params(args.project / "params.yaml")
    prepared = load_prepared(args.project / "data" / "prepared")
    norm, config = prepared.normalization, params.quantize
    calibration = calibration_images(prepared, config.calibration_images)
    test_x = normalize(prepared.test.x, norm.mean, norm.std).numpy()
    labels = prepared.test.y.numpy()
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".int8-bench-") as tmp:
        tmp = Path(tmp)
        for n, (label, fp32) in enumerate(networks(args.project).items()):
            forms = {"fp32": fp32}
            for v, (name, options) in enumerate(VARIANTS.items()):
                options = dict(options)
                method = config.model_copy(update={"method": options.pop("method", config.method)})
                forms[name] = quantize_onnx(fp32, tmp / f"net{n}-form{v}.onnx", calibration, method, **options)
            correct = {k: (onnx_predictions(f, test_x) == labels).astype(float) for k, f in forms.items()}
            change = {k: paired_t(100 * (c - correct["fp32"])) for k, c in correct.items()}
            for batch in (1, 64):
                x = np.random.default_rng(0).standard_normal((batch, *test_x.shape[1:]), dtype=np.float32)
                # the latency stage's ONNX Runtime runner (a fresh session each turn); it needs no model
                makers = [partial(RUNTIMES["onnxruntime"], None, f, x, args.threads) for f in forms.values()]
                repeats = args.repeats if batch == 1 else max(10, args.repeats // 5)
                times = times_in_turns(makers, 10, repeats, ROUNDS)
                sizes = round_sizes(repeats, ROUNDS)
                for name, t in zip(forms, times):
                    speedup, low, high = speedup_in_turns(times[0], t, sizes)
                    rows.append({"network": label, "form": name, "batch": batch,
                                 "top1": 100 * float(correct[name].mean()), "top1_change": change[name].diff,
                                 "top1_low": change[name].low, "top1_high": change[name].high,
                                 "us": 1000 * float(np.median(t)), "speedup": speedup, "low": low, "high": high})
                print(f"{label} b{batch}: " + ", ".join(f"{r['form']} {cell(r['speedup'], r['low'], r['high'], '.2f')}x"
                                                       for r in rows[-len(forms):]), flush=True)
            x64 = test_x[:64]
            profiles[label] = {k: profile(forms[k], x64, args.threads, 50, tmp) for k in ("fp32", "recipe")}
    args.out.write_text(markdown(rows, profiles, args, params))
    print(f"wrote {args.out}")


def markdown(rows: list[dict], profiles: dict, args: argparse.Namespace, params: Params) -> str:
    import onnxruntime
    import pandas as pd

    df = pd.DataFrame(rows)
    df["speedup (95 %)"] = [cell(r.speedup, r.low, r.high, ".2f") for r in df.itertuples()]
    wide = df.pivot_table(index=["network", "form"], columns="batch", values=["us", "speedup (95 %)"],
                          aggfunc="first", sort=False)
    wide = wide[[(v, b) for b in sorted(df["batch"].unique()) for v in ("us", "speedup (95 %)")]]
    wide.columns = [f"{'µs' if v == 'us' else v} b{b}" for v, b in wide.columns]
    first = df.drop_duplicates(["network", "form"]).set_index(["network", "form"])
    first["top1 − fp32 (95 %)"] = [cell(r.top1_change, r.top1_low, r.top1_high, "+.2f") for r in first.itertuples()]
    table = wide.join(first[["top1", "top1 − fp32 (95 %)"]]).reset_index()
    model, q = params.model, params.quantize
    project = f"`{model.arch}` width {model.width:g} (project `{args.project.resolve().name}`)"
    recipe = (f"pre-processing, QDQ, {'per-channel' if q.per_channel else 'per-tensor'} int8 weights, uint8 "
              f"activations, {q.method} calibration on {q.calibration_images:,} training images")
    lines = ["# int8 against fp32 on ONNX Runtime", "",
             f"CPU: {cpu()}, {os.cpu_count()} cores; onnxruntime {onnxruntime.__version__}, {args.threads} thread(s); "
             f"networks: {project}. `python benchmarks/int8.py` wrote this file.", "",
             f"Each network's fp32 form, the quantize stage's recipe ({recipe}) and each alternative; "
             "test top-1 on ONNX Runtime and its change from fp32 (paired over the test images, 95 % t "
             f"interval); median µs of a pass; speedup over fp32 with its 95 % interval over {ROUNDS} rounds "
             "in which every form of a network was timed in turns (geometric mean of each round's ratio of "
             "medians, as the latency stage). The intervals are this run's noise, not another machine's or "
             "day's.", "", table.to_markdown(index=False, floatfmt=".2f"), "", "## Targets", "",
             f"The recipe against the targets: top-1 within {TOLERANCE} points of fp32, and the speedups below; "
             "met or not met where the interval is on one side of the target.", ""]
    for net, group in df[df["form"] == "recipe"].groupby("network", sort=False):
        first_row = group.iloc[0]
        accuracy = (f"top-1 {cell(first_row.top1_change, first_row.top1_low, first_row.top1_high, '+.2f')} "
                    f"(within {TOLERANCE}: {verdict(first_row.top1_low, first_row.top1_high, -TOLERANCE)})")
        speed = [f"b{r.batch} {cell(r.speedup, r.low, r.high, '.2f')}x (target {TARGETS[r.batch]}x: "
                 f"{verdict(r.low, r.high, TARGETS[r.batch])})" for r in group.itertuples() if r.batch in TARGETS]
        lines.append(f"- {net}: {accuracy}; " + "; ".join(speed))
    lines += ["", "## Where the time goes (batch 64, µs per pass per operator type, ONNX Runtime's profiler)", ""]
    for net, forms in profiles.items():
        ops = sorted(set(forms["fp32"]) | set(forms["recipe"]),
                     key=lambda o: -(forms["fp32"].get(o, 0) + forms["recipe"].get(o, 0)))
        frame = pd.DataFrame({"op": ops, "fp32 µs": [forms["fp32"].get(o, 0.0) for o in ops],
                              "int8 µs": [forms["recipe"].get(o, 0.0) for o in ops]})
        frame.loc[len(frame)] = ["total", frame["fp32 µs"].sum(), frame["int8 µs"].sum()]
        lines += [f"### {net}", "", frame.to_markdown(index=False, floatfmt=".1f"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
