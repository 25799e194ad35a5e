"""What a model costs and how well it does: accuracy, params, MACs, file size, CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):  # each output element: in/groups x kh x kw products
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    return module.in_features * module.out_features  # nn.Linear at batch 1


@torch.no_grad()
def count_macs_params(model: nn.Module) -> tuple[int, int]:
    """(multiply-accumulates of the conv and linear layers, parameters) at batch 1."""
    macs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: macs.append(_layer_macs(mod, out)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, *model.input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sum(macs), sum(p.numel() for p in model.parameters())


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def file_size_mb(path: Path) -> float:
    return Path(path).stat().st_size / 2**20


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, threads: int = 1, warmup: int = 10, repeats: int = 50,
                   batch_size: int = 1) -> float:
    """Median wall time (ms) of one forward pass on the CPU with a fixed thread count."""
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, *model.input_shape).contiguous(memory_format=torch.channels_last)
    times = []
    with torch_threads(threads):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def cost(model: nn.Module, path: Path, threads: int, warmup: int, repeats: int) -> dict[str, float]:
    """Size and speed of a saved model: params, MACs, file size (MB), latency at batch 1 (ms)."""
    macs, _ = count_macs_params(model)
    return {"params": trainable_params(model), "macs": macs, "size_mb": file_size_mb(path),
            "latency_ms": cpu_latency_ms(model, threads, warmup, repeats)}
