"""The GPU check: prunekd's training loop against a bare loop on the same device, determinism and
resume on that device, and a short study through prunekd's stages.

    python benchmarks/gpu.py [--data FOLDER] [--out FOLDER]     # on a CUDA machine: the check
    python benchmarks/gpu.py --quick                            # anywhere, in seconds: the smoke check

It writes FOLDER/gpu.json (default: benchmarks/) and prints one line per figure:

- throughput (images/s) of prunekd's loop (``train.train_epoch``: shuffling, augmentation,
  normalisation, the finiteness check) and of a bare loop that trains one resident batch over and
  over (the device's ceiling for this model and batch), each in NCHW and channels_last (and
  whether the layout the loop picks for this device is the faster); prunekd's loop in bf16 and
  with determinism too;
- determinism: two runs with ``train.deterministic`` (bit-identical?), a run killed in its second
  epoch and resumed from its checkpoint (equal to them?), and two runs without it (how far apart);
- a short study through prunekd's stages (every stage's ``run()`` in dvc.yaml's order, in a
  throwaway project, with tracking off): a teacher, the sensitivity curves, L1 pruning at two
  ratios with BatchNorm recalibration, ``ft`` and ``kd`` retraining, int8 forms, latency and the
  report; its answer (test top-1 before retraining, after ft and kd, per ratio), each stage's
  seconds, and the report itself beside gpu.json (gpu-report.md).

It needs what the stages import but MLflow (torch, numpy, pandas, scipy, scikit-learn, matplotlib,
tabulate, PyYAML, onnx, onnxruntime, tqdm, pydantic, ruamel.yaml, torch-pruning), and checks
that they import before it uses the GPU; not MLflow, DVC or Prefect (docs/guide.md, On a GPU:
carrying them to a machine).
Fashion-MNIST is read from --data (the four *-ubyte.gz files), or where ``prunekd prepare`` finds it;
--quick uses scikit-learn's digits and a small MobileNet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

from prunekd.checkpoint import Checkpoint
from prunekd.config import ComputeConfig, TrainConfig
from prunekd.data import Normalization, Split, load_digits_dataset, load_fashion_mnist, normalize, split_train_val
from prunekd.distill import cross_entropy_loss
from prunekd.models import build_model
from prunekd.train import (AUTOCAST, CUBLAS_WORKSPACE, fit, make_optimizer, memory_format, place, resident, train_epoch,
                           use_determinism, warmup_cosine)

ROOT = Path(__file__).resolve().parents[1]

# width: the throughput probes' MobileNet (the study's teacher at width 1.0); study_width: the
# determinism runs' and the short study's (params.yaml's default); images: training images kept
FULL = dict(width=1.0, study_width=0.5, batch=256, teacher_epochs=8, retrain_epochs=2, probe_steps=200,
            det_epochs=2, images=None)
QUICK = dict(width=0.25, study_width=0.25, batch=64, teacher_epochs=2, retrain_epochs=1, probe_steps=5,
             det_epochs=2, images=256)  # --quick: seconds on a CPU


LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@contextmanager
def layout(fmt: torch.memory_format):
    """prunekd's loop (model, batches) in ``fmt`` instead of the one it picks for the device: to
    measure the pick against the other layout."""
    with mock.patch("prunekd.train.memory_format", lambda dev: fmt):
        yield


def data(args) -> tuple[Split, Split, Normalization, tuple[int, ...]]:
    """The probes' and determinism runs' training and validation splits, their normalisation and
    image shape."""
    raw = load_digits_dataset(None) if args.quick else load_fashion_mnist(Path(args.data))
    train, val = split_train_val(raw.train, 0.1, seed=0, train_subset=QUICK["images"] if args.quick else None)
    pixels = train.x.float() / 255
    norm = Normalization([pixels.mean().item()], [pixels.std().item()])
    return train, val, norm, tuple(train.x.shape[1:])


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def loop_throughput(model, train: Split, norm, sched: TrainConfig, dev, autocast) -> float:
    """Images/s of prunekd's loop over one epoch, after a warm-up epoch (kernels chosen, caches filled)."""
    model = place(model, dev)
    train = resident(train, dev)
    opt = make_optimizer(model, sched)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(2 * math.ceil(len(train) / sched.batch_size)))
    gen = torch.Generator().manual_seed(0)
    train_epoch(model, train, norm, sched, cross_entropy_loss(), opt, lr_sched, gen, "warm-up", autocast=autocast)
    sync(dev)
    start = time.perf_counter()
    train_epoch(model, train, norm, sched, cross_entropy_loss(), opt, lr_sched, gen, "timed", autocast=autocast)
    sync(dev)
    return len(train) / (time.perf_counter() - start)


def bare_throughput(model, train: Split, norm, batch: int, steps: int, dev, fmt) -> float:
    """Images/s of the plainest loop: one normalised batch resident on the device, forward, CE,
    backward, SGD step, nothing read back until the end."""
    model = model.to(dev).to(memory_format=fmt).train()
    x = normalize(train.x[:batch], norm.mean, norm.std).to(dev).contiguous(memory_format=fmt)
    y = train.y[:batch].to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(max(3, steps // 10)):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * batch / (time.perf_counter() - start)


def probes(size, train, norm, shape, dev) -> dict:
    def teacher():
        torch.manual_seed(0)
        return build_model("mobilenet_v1", 10, shape, size["width"])
    sched = TrainConfig(epochs=2, batch_size=size["batch"], lr=0.05, translate=1, hflip=False)
    # the bare loop and prunekd's under the same settings: as fast as they go (cuDNN's autotuner on,
    # no TF32); determinism's price is measured apart
    use_determinism(False)
    out = {f"bare_{name}": bare_throughput(teacher(), train, norm, size["batch"], size["probe_steps"], dev, fmt)
           for name, fmt in LAYOUTS.items()}
    for name, fmt in LAYOUTS.items():
        with layout(fmt):
            out[f"loop_fp32_{name}"] = loop_throughput(teacher(), train, norm, sched, dev, None)
    out["memory_format"] = next(name for name, fmt in LAYOUTS.items() if fmt == memory_format(dev))
    out["loop_fp32"] = out[f"loop_fp32_{out['memory_format']}"]  # the loop as the stages run it
    out["layout_picked_is_faster"] = out["loop_fp32"] == max(out[f"loop_fp32_{name}"] for name in LAYOUTS)
    out["loop_bf16"] = loop_throughput(teacher(), train, norm, sched, dev, AUTOCAST["bf16"])
    use_determinism(True)
    out["loop_fp32_deterministic"] = loop_throughput(teacher(), train, norm, sched, dev, None)
    out["loop_over_bare"] = out["loop_fp32"] / max(out[f"bare_{name}"] for name in LAYOUTS)
    return out


class Killed(Exception):
    pass


def determinism(size, train, val, norm, shape) -> dict:
    sched = TrainConfig(epochs=size["det_epochs"], batch_size=size["batch"], lr=0.05, translate=1, hflip=False)

    def run(deterministic: bool, checkpoint=None, kill_after=None):
        torch.manual_seed(0)
        model = build_model("mobilenet_v1", 10, shape, size["study_width"])

        def on_epoch(epoch, metrics):
            if epoch == kill_after:
                raise Killed
        fit(model, train, val, norm, sched, cross_entropy_loss(), 0, on_epoch, name="det", checkpoint=checkpoint,
            compute=ComputeConfig(deterministic=deterministic))
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def max_diff(a, b) -> float:
        return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())

    a, b = run(True), run(True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run(True, Checkpoint("det", (), Path(tmp)), kill_after=2)  # the checkpoint holds epoch 1
        except Killed:
            pass
        resumed = run(True, Checkpoint("det", (), Path(tmp)))
    c, d = run(False), run(False)
    return {"deterministic_runs_identical": max_diff(a, b) == 0.0, "resumed_equals_uninterrupted":
            max_diff(a, resumed) == 0.0, "nondeterministic_max_weight_diff": max_diff(c, d)}


RATIOS = (0.26, 0.5)


def study_params(size: dict, quick: bool) -> dict:
    """params.yaml shrunk to the short study: two ratios x {ft, kd} x one seed, latency timed briefly
    (the deploy runtimes are the CPU's); with --quick, digits and a small MobileNet."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(arch="mobilenet_v1", width=size["study_width"])
    raw["teacher"].update(epochs=size["teacher_epochs"], batch_size=size["batch"])
    raw["retrain"].update(epochs=size["retrain_epochs"], batch_size=size["batch"], modes=["ft", "kd"], seeds=[0])
    raw["prune"].update(ratios=list(RATIOS), unit="params", criterion="l1", schedule="uniform", round_to=16)
    raw["measure"].update(batch_sizes=[1], warmup=2, repeats=20, rounds=2)
    if quick:
        raw["data"].update(dataset="digits", train_subset=QUICK["images"])
        raw["prune"].update(sensitivity_ratios=[0.5], bn_recalibration_batches=2)
        raw["quantize"]["calibration_images"] = 64
    return raw


def stage_modules() -> dict:
    """Every stage's module, imported: a package the study needs and the machine lacks fails here,
    in seconds, not after the probes."""
    import importlib

    from prunekd.cli import STAGES

    return {stage: importlib.import_module(f"prunekd.stages.{stage}") for stage in STAGES}


def stage_calls(params) -> list[tuple[str, tuple]]:
    """Every stage of the study with its matrix item, in the order dvc.yaml's graph runs them
    (``prunekd.cli.STAGES`` is that order)."""
    from prunekd.cli import STAGES

    runs = [(r, m, s) for r in params.prune.ratios for m in params.retrain.modes for s in params.retrain.seeds]
    items = {"prune": [(r,) for r in params.prune.ratios], "retrain": runs, "quantize": runs}
    return [(stage, item) for stage in STAGES for item in items.get(stage, [()])]


def study(size: dict, args, stages: dict) -> dict:
    """The short study through prunekd's stages: each stage's ``run()``, in a throwaway project, with
    tracking off (no MLflow, no DVC): training, recalibration, evaluation and sensitivity on this
    device, export, int8 and latency on the CPU. Returns the report's answer (test top-1 before
    retraining, after ft and kd, per ratio) and each stage's seconds; the report beside gpu.json."""
    import yaml

    from prunekd.config import load_params
    from prunekd.data import fashion_mnist_dir
    from prunekd.paths import Layout

    with mock.patch.dict(os.environ, {"PRUNEKD_TRACKING": "off"}), tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        if not args.quick:
            source = fashion_mnist_dir(Path(args.data))
            (layout.raw / "fashion_mnist").mkdir(parents=True)
            for file in source.glob("*-ubyte.gz"):
                shutil.copy(file, layout.raw / "fashion_mnist" / file.name)
        layout.params.write_text(yaml.safe_dump(study_params(size, args.quick), sort_keys=False))
        params = load_params(layout.params)
        seconds = {}
        for stage, item in stage_calls(params):
            start = time.perf_counter()
            stages[stage].run(params, layout, *item)
            seconds["@".join([stage, "-".join(map(str, item))]) if item else stage] = time.perf_counter() - start
        answer = json.loads((layout.reports / "metrics.json").read_text())
        shutil.copy(layout.report, Path(args.out) / "gpu-report.md")
    out = {"teacher_top1": answer["teacher_top1"]}
    for ratio in params.prune.ratios:
        pct = f"{100 * ratio:g}"
        out |= {f"{mode}_{ratio}": answer[f"top1_{mode}_{pct}"] for mode in ("none", "ft", "kd")}
        out[f"kd_minus_ft_{ratio}"] = answer[f"kd_minus_ft_{pct}"]
    return out | {f"{stage}_s": s for stage, s in seconds.items()} | {"stages_s": sum(seconds.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "raw"),
                        help="the folder holding fashion_mnist/ (the four *-ubyte.gz files)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"), help="where gpu.json goes")
    parser.add_argument("--quick", action="store_true", help="digits and a small network: a smoke check, any device")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read once, at cuBLAS's first use
    size = QUICK if args.quick else FULL
    stages = stage_modules()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, val, norm, shape = data(args)
    figures = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "quick": args.quick} | size
    started = time.perf_counter()
    figures["throughput"] = probes(size, train, norm, shape, dev)
    figures["determinism"] = determinism(size, train, val, norm, shape)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures["study"] = study(size, args, stages)
    figures["wall_s"] = time.perf_counter() - started
    (out / "gpu.json").write_text(json.dumps(figures, indent=2) + "\n")
    for section in ("throughput", "determinism", "study"):
        for key, value in figures[section].items():
            print(f"{section}.{key}: {value:.4g}" if isinstance(value, float) else f"{section}.{key}: {value}")
    print(f"wrote {out / 'gpu.json'} ({figures['wall_s']:.0f} s on {figures['device']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
