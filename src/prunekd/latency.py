"""CPU latency of a model's deploy form on each runtime, every architecture timed in turns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .config import MeasureConfig
from .measure import count_macs_params, fold_batchnorm, torch_threads
from .models import ModelFileError, PrunableNet
from .interval import paired_t

# A runner is one forward pass on a fixed input, ready to be timed.
Runner = Callable[[], object]


def _torch_runner(model: nn.Module, onnx_file: Path, x: np.ndarray, threads: int) -> Runner:
    """Eager PyTorch on the deploy form: BatchNorm folded, channels_last, inference mode."""
    deployed = fold_batchnorm(model).cpu().to(memory_format=torch.channels_last)
    inp = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            return deployed(inp)
    return run


def onnx_session(onnx_model: Path | bytes, threads: int = 1, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session (of a file, or a model's bytes) with a fixed thread count and
    every graph optimisation; with ``profile_prefix``, under ONNX Runtime's profiler, which writes
    its file there at ``end_profiling()``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    model = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def check_onnx(model: PrunableNet, onnx_file: Path, model_file: Path, atol: float = 1e-3) -> None:
    """Refuse an ``onnx_file`` that is not ``model``'s deploy form: unreadable (garbage, cut
    short), another input shape, or other logits on a fixed probe batch (another model's export,
    say the teacher's placed as a pruned one, which would be timed as a 1.0x "speedup").

    The check is by function, not by bytes or a stored digest: the same weights exported by
    another torch version are accepted, an edited file whose digest was recomputed is not."""
    fix = f"make it again: prunekd export {model_file} (or rerun the stage that writes both)"
    try:
        session = onnx_session(onnx_file)
        name = session.get_inputs()[0].name
        probe = np.random.default_rng(0).standard_normal((2, *model.input_shape)).astype(np.float32)
        got = session.run(None, {name: probe})[0]
    except Exception as exc:  # ONNX Runtime's own error types: invalid protobuf, wrong rank, ...
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelFileError(f"{onnx_file}: not a readable ONNX model of {model_file} ({why}); {fix}") from None
    with torch.inference_mode():
        want = model.eval()(torch.from_numpy(probe)).numpy()
    if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=1e-3):
        raise ModelFileError(f"{onnx_file}: not the deploy form of {model_file} (its outputs differ on a probe "
                             f"batch: another model's export, or edited); {fix}")


def _onnxruntime_runner(model: nn.Module | None, onnx_file: Path | bytes, x: np.ndarray, threads: int) -> Runner:
    """The exported file, or an export's bytes (BatchNorm already folded), on a new session of ONNX
    Runtime's CPU provider (``model`` is not read: the deploy form is all it runs)."""
    session = onnx_session(onnx_file, threads)
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


# runtime name -> (model, its ONNX file, input batch, threads) -> runner
RUNTIMES: dict[str, Callable[[nn.Module | None, Path | bytes, np.ndarray, int], Runner]] = {
    "onnxruntime": _onnxruntime_runner,
    "torch": _torch_runner,
}


def round_sizes(repeats: int, rounds: int) -> list[int]:
    """Calls per round when ``repeats`` calls are split into ``rounds`` turns (``times_in_turns``)."""
    rounds = max(1, min(rounds, repeats))
    return [repeats // rounds + (r < repeats % rounds) for r in range(rounds)]


def times_in_turns(makers: list[Callable[[], Runner]], warmup: int, repeats: int, rounds: int = 10,
                   seed: int = 0) -> list[np.ndarray]:
    """Wall times (ms) of ``repeats`` calls of each runner that ``makers`` make.

    The runners take turns, ``rounds`` rounds of ``repeats / rounds`` calls each (``round_sizes``),
    so a burst of machine noise hits every runner alike and the ratios between them stay fair. Each
    round runs them in its own order, drawn at random (``seed``: the same orders every run), so no
    runner keeps a place or a neighbour: a runner slowed by the one before it (seen: the int8 form
    timed next to an fp32 one, a few percent slower under a fixed order) adds noise that the
    intervals over rounds count, not a bias they would not show. Each turn makes its runner afresh
    and calls it ``warmup`` times untimed first: two ONNX Runtime sessions of one model in one
    process ran up to 7 % apart, turn after turn, so a runner kept for the whole run carries its
    own offset into every round; made anew, the offsets vary from round to round and the interval
    counts them.
    """
    rng = np.random.default_rng(seed)
    times: list[list[float]] = [[] for _ in makers]
    for calls in round_sizes(repeats, rounds):
        for i in rng.permutation(len(makers)):
            run, t = makers[i](), times[i]
            for _ in range(warmup):
                run()
            for _ in range(calls):
                start = time.perf_counter()
                run()
                t.append(time.perf_counter() - start)
    return [1000 * np.asarray(t) for t in times]


def speedup_in_turns(slow: np.ndarray, fast: np.ndarray, sizes: list[int], level: float = 0.95) -> tuple[float, ...]:
    """How many times faster ``fast`` ran than ``slow`` (two runners' ``times_in_turns`` times, rounds
    of ``sizes`` calls): the geometric mean over rounds of each round's ratio of medians, and its
    ``level`` t interval over the rounds. Each round times both, close in time, so the machine's
    drift between rounds cancels and the rounds are the pairs; the interval is this run's timing
    noise, not what another machine or day would give. NaN bounds with one round."""
    if not len(slow) == len(fast) == sum(sizes):
        raise ValueError(f"{len(slow)} and {len(fast)} times for rounds of {sizes} calls")
    edges = np.cumsum(sizes)[:-1]
    logs = [np.log(np.median(s) / np.median(f))
            for s, f in zip(np.split(slow, edges), np.split(fast, edges), strict=True)]
    est = paired_t(np.asarray(logs), level)
    return tuple(float(np.exp(v)) for v in (est.diff, est.low, est.high))


@dataclass(frozen=True)
class Architecture:
    """One network to time: its label in the table (the prune ratio; 0 for the teacher), and on
    ONNX Runtime its int8 form too where it has one."""
    ratio: float
    model: PrunableNet
    onnx_file: Path
    int8_file: Path | None = None


SPEEDUP_COLUMNS = ["speedup", "speedup_low", "speedup_high"]  # a form's, over the fp32 teacher
INT8_SPEEDUP_COLUMNS = ["int8_speedup", "int8_speedup_low", "int8_speedup_high"]  # an int8 form's, over its fp32 form
LATENCY_COLUMNS = ["ratio", "runtime", "precision", "batch", "median_ms", "p25_ms", "p75_ms", "ms_per_image",
                   *SPEEDUP_COLUMNS, "macs_ratio", *INT8_SPEEDUP_COLUMNS]
INT8_RUNTIME = "onnxruntime"  # the runtime that runs the int8 forms


def _forms(archs: list[Architecture], runtime: str) -> list[tuple[Architecture, str, Path]]:
    """What is timed on ``runtime``: every architecture's fp32 form, then (on ONNX Runtime) the int8 forms."""
    forms = [(a, "fp32", a.onnx_file) for a in archs]
    if runtime == INT8_RUNTIME:
        forms += [(a, "int8", a.int8_file) for a in archs if a.int8_file is not None]
    return forms


def latency_table(archs: list[Architecture], measure: MeasureConfig, *, seed: int = 0) -> list[dict]:
    """Latency of every architecture on every runtime at every batch size of ``measure``, on the CPU.

    For each (runtime, batch) the architectures (and on ONNX Runtime their int8 forms) are timed
    in turns in this process with ``measure.threads`` threads; ``seed`` draws the input batches and
    the order of each round.
    ``speedup`` and ``macs_ratio`` are the first architecture's (the teacher's, fp32) time and
    MACs over this one's: pruning pays off as far as the one follows the other. An int8 form's row
    also has ``int8_speedup`` (its fp32 form's time over its own); an fp32 form's has NaN there.
    Both speedups are ``speedup_in_turns``'s: paired by round, with a 95 % interval over the rounds
    (``_low``, ``_high``).
    """
    macs = {a.ratio: count_macs_params(a.model)[0] for a in archs}
    rng = np.random.default_rng(seed)
    rows = []
    with torch_threads(measure.threads):
        for runtime in measure.runtimes:
            for batch in measure.batch_sizes:
                forms = _forms(archs, runtime)
                inputs = {a.ratio: rng.standard_normal((batch, *a.model.input_shape), dtype=np.float32) for a in archs}
                makers = [partial(RUNTIMES[runtime], a.model, file, inputs[a.ratio], measure.threads)
                          for a, _, file in forms]
                times = times_in_turns(makers, measure.warmup, measure.repeats, measure.rounds,
                                       seed=int(rng.integers(2**32)))
                fp32 = {arch.ratio: t for (arch, precision, _), t in zip(forms, times) if precision == "fp32"}
                sizes = round_sizes(measure.repeats, measure.rounds)
                for (arch, precision, _), t in zip(forms, times):
                    median = float(np.median(t))
                    rows.append({"ratio": arch.ratio, "runtime": runtime, "precision": precision, "batch": batch,
                                 "median_ms": median,
                                 "p25_ms": float(np.percentile(t, 25)), "p75_ms": float(np.percentile(t, 75)),
                                 "ms_per_image": median / batch,
                                 **dict(zip(SPEEDUP_COLUMNS, speedup_in_turns(times[0], t, sizes), strict=True)),
                                 "macs_ratio": macs[archs[0].ratio] / macs[arch.ratio],
                                 **dict(zip(INT8_SPEEDUP_COLUMNS, speedup_in_turns(fp32[arch.ratio], t, sizes)
                                            if precision == "int8" else (np.nan,) * 3, strict=True))})
    return rows


def latency_metrics(row: dict) -> dict[str, float]:
    """One latency row as MLflow metrics: ``median_ms_<runtime>_b<batch>``, ``speedup_<runtime>_b<batch>``
    (``<runtime>_int8`` for an int8 form)."""
    runtime = row["runtime"] + ("_int8" if row.get("precision", "fp32") == "int8" else "")
    return {f"{col}_{runtime}_b{row['batch']}": float(row[col]) for col in ("median_ms", "speedup")}
