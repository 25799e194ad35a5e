"""The one training loop. Variants (plain CE, knowledge distillation) are loss functions."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch
from torch import nn
from .checkpoint import Checkpoint
from .data import Normalization, Split, augment, batch_bounds, batches, normalize
from .errors import UserError
from .progress import progress

if TYPE_CHECKING:
    from .config import ComputeConfig, TrainConfig

# loss(student_logits, normalized_inputs, targets) -> scalar; KD closes over its teacher.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class EpochCallback(Protocol):
    def __call__(self, epoch: int, metrics: dict[str, float]) -> None: ...


class DivergenceError(UserError, RuntimeError):
    """Training produced a non-finite loss."""


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_format(dev: torch.device) -> torch.memory_format:
    """The faster layout for this MobileNet's training loop on each device: channels_last on the CPU,
    NCHW on CUDA (benchmarks/run.py measures both on the CPU, benchmarks/gpu.py on a GPU)."""
    return torch.channels_last if dev.type == "cpu" else torch.contiguous_format


def to_device(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return x.to(dev, non_blocking=True).contiguous(memory_format=memory_format(dev))


def place(model: nn.Module, dev: torch.device | None = None) -> nn.Module:
    """``model`` on ``dev`` (the default device), in that device's memory format."""
    dev = dev or device()
    return model.to(dev).to(memory_format=memory_format(dev))


def resident(split: Split, dev: torch.device) -> Split:
    """``split`` held on ``dev`` when it takes at most a quarter of the device's free memory, so that
    batching, augmentation and normalisation run there and no batch is copied; else as it is."""
    if dev.type != "cuda" or split.x.device == dev:
        return split
    free, _ = torch.cuda.mem_get_info(dev)
    if split.x.nbytes + split.y.nbytes > free // 4:
        return split
    return dataclasses.replace(split, x=split.x.to(dev), y=split.y.to(dev))


# cuBLAS is deterministic only with a fixed workspace, which it reads when it starts
CUBLAS_WORKSPACE = ":4096:8"


def use_determinism(deterministic: bool) -> None:
    """Deterministic algorithms (PyTorch's and cuDNN's), or the fastest ones. On the CPU every kernel
    prunekd runs is deterministic either way, so the choice changes nothing there; on CUDA it is what
    makes a rerun, or a killed and resumed run, bit-identical (docs/guide.md, On a GPU).

    Either way fp32 stays fp32 on CUDA: PyTorch lets cuDNN run convolutions in TF32 (a 10-bit
    mantissa) by default on Ampere and later GPUs, and a run's precision is what ``train.precision``
    says (bf16 is asked for by name). The CPU has no TF32: nothing changes there."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}  # train.precision -> the autocast dtype


def warmup_cosine(total_steps: int, warmup_frac: float = 0.05) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
    return factor


def make_optimizer(model: nn.Module, sched: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (1-D tensors).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": sched.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=sched.lr, momentum=sched.momentum, nesterov=sched.momentum > 0)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, norm: Normalization, batch_size: int = 1000) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy over a split."""
    model.eval()
    dev = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    for xb, yb in batches(split, batch_size):
        logits = model(to_device(normalize(xb, norm.mean, norm.std), dev))
        yb = yb.to(dev)
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"top1": 100.0 * correct / len(split), "loss": loss_sum / len(split)}


@torch.no_grad()
def predictions(model: nn.Module, split: Split, norm: Normalization, batch_size: int = 1000) -> torch.Tensor:
    """The predicted class of every image of a split, in order (uint8 on the CPU)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(to_device(normalize(xb, norm.mean, norm.std), dev)).argmax(1).to(torch.uint8).cpu()
                      for xb, _ in batches(split, batch_size)])


RECALIBRATION_BATCH = 128  # images per batch of BatchNorm recalibration


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, split: Split, norm: Normalization, *, n_batches: int,
                          seed: int = 0, batch_size: int = RECALIBRATION_BATCH) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance, in place, from ``n_batches`` batches
    of ``split`` (drawn by ``seed``, no augmentation) forwarded with only the BatchNorms in train
    mode and no gradients; weights and every other buffer are untouched (EagleEye's adaptive
    BatchNorm, 2020). After pruning, the statistics the teacher learned describe activations that
    no longer occur, and a pruned network judged with them is near chance whatever it kept.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if n_batches <= 0 or not norms:
        return model
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n_batches * batch_size]
    dev = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches, not a moving one
        m.train()
    try:  # BatchNorm in training mode: no batch of a single image (a short split's last)
        for start, end in batch_bounds(len(order), batch_size, single_ok=False):
            idx = order[start:end]
            model(to_device(normalize(split.x[idx], norm.mean, norm.std), dev))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


def train_steps(n: int, batch_size: int) -> int:
    """The SGD steps of an epoch over ``n`` images: its training batches (``batches``, shuffled)."""
    return len(batch_bounds(n, batch_size, single_ok=False))


# Asking whether the loss is finite waits for the device: on CUDA it is asked once every this many
# steps (and at an epoch's end); on the CPU, where it costs nothing, at every step.
FINITE_CHECK_STEPS = 50


def train_epoch(model, split, norm, sched, loss_fn, opt, lr_sched, gen, desc, *,
                autocast: torch.dtype | None = None) -> dict[str, float]:
    model.train()
    dev = next(model.parameters()).device
    steps = train_steps(len(split), sched.batch_size)
    check_every = 1 if dev.type == "cpu" else FINITE_CHECK_STEPS
    # sums kept on the device (float64, as Python's floats were): no step waits to read them
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    finite = torch.ones((), dtype=torch.bool, device=dev)
    seen, checked = 0, 0
    bar = progress(batches(split, sched.batch_size, gen), steps, desc)
    for step, (xb, yb) in enumerate(bar, 1):
        if sched.translate or sched.hflip:
            xb = augment(xb, sched.translate, sched.hflip, gen)
        x, y = to_device(normalize(xb, norm.mean, norm.std), dev), yb.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=autocast) if autocast else contextlib.nullcontext():
            logits = model(x)
        # the loss in fp32 (a no-op under fp32): under bf16 the softmax at a temperature, and the
        # distillation teacher's logits, would otherwise carry bf16's rounding into the gradient
        loss = loss_fn(logits.float(), x, y)
        finite &= torch.isfinite(loss)
        if step % check_every == 0 or step == steps:
            if not finite:  # stop at once: every later step would be wasted
                value, where = ((loss.item(), f"at step {step}/{steps}") if check_every == 1 else
                                ("non-finite", f"between steps {checked + 1} and {step} of {steps}"))
                raise DivergenceError(f"{desc}: the loss became {value} {where}, so training diverged; "
                                      f"lower the learning rate (lr {sched.lr:g})")
            checked = step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if checked == step:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", refresh=False)
    return {"train_loss": loss_sum.item() / seen, "train_top1": 100.0 * correct.item() / seen}


def fit(model: nn.Module, train: Split, val: Split, norm: Normalization, sched: TrainConfig,
        loss_fn: LossFn, seed: int, on_epoch: EpochCallback | None = None, name: str = "train",
        checkpoint: Checkpoint | None = None, on_keep: KeepCallback | None = None,
        compute: ComputeConfig | None = None) -> nn.Module:
    """Train ``model`` in place with SGD + warm-up/cosine; report metrics after each epoch.

    It ends with the last epoch's weights, or with ``sched.keep == "best_val"`` those of the epoch
    with the best validation top-1 (the earliest, on a tie), which ``on_keep`` is told of.
    With a ``checkpoint``, the state after each epoch is saved there, and a run killed midway
    resumes from its last finished epoch to the weights an uninterrupted run ends with.
    ``compute`` (params.yaml's ``train``) sets the precision and determinism; without it, fp32 and
    torch's settings as they are.
    """
    gen = seed_everything(seed)
    dev = device()
    precision = compute.precision if compute else "fp32"
    if compute:
        use_determinism(compute.deterministic)
    # Keyed on the start weights, so computed before training changes them.
    key = checkpoint and checkpoint.key(name, seed, sched, norm, model.state_dict(), train.x, train.y,
                                        val.x, val.y, compute_key(dev, precision, not compute or compute.deterministic))
    place(model, dev)
    train, val = resident(train, dev), resident(val, dev)
    opt = make_optimizer(model, sched)
    steps = sched.epochs * train_steps(len(train), sched.batch_size)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    history = checkpoint.resume(key, sched.epochs, model, opt, lr_sched, gen, on_epoch) if checkpoint else []
    best = BestEpoch(sched.keep == "best_val", history, checkpoint.best_weights if checkpoint else {})
    for epoch in range(len(history) + 1, sched.epochs + 1):
        metrics = train_epoch(model, train, norm, sched, loss_fn, opt, lr_sched, gen,
                              f"{name} epoch {epoch}/{sched.epochs}", autocast=AUTOCAST[precision])
        val_metrics = evaluate(model, val, norm)
        metrics |= {"val_top1": val_metrics["top1"], "val_loss": val_metrics["loss"]}
        print(f"{name} epoch {epoch}/{sched.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
              file=sys.stderr)
        if on_epoch:
            on_epoch(epoch, metrics)
        history.append(metrics)
        best.update(history, model)
        if checkpoint:  # after the callback, so that the saved RNG states are those the next epoch starts from
            checkpoint.save(key, history, model, opt, lr_sched, gen, best.weights)
    if best.enabled:
        best.restore(model)
        print(f"{name}: keeping epoch {best.epoch}/{sched.epochs} (best validation top-1, "
              f"{history[best.epoch - 1]['val_top1']:.2f} %)", file=sys.stderr)
        if on_keep:
            on_keep(best.epoch, history[best.epoch - 1]["val_top1"])
    return model.eval()


def compute_key(dev: torch.device, precision: str, deterministic: bool = True) -> str:
    """What a checkpoint must have been made with, besides the settings, to be resumed: the device
    type (on CUDA the GPU's model and compute capability too: another GPU computes other bits), the
    precision where it is not fp32, and whether it ran without determinism (so a CPU fp32,
    deterministic checkpoint keeps its old key). On CUDA, determinism is what makes a resumed run
    equal an uninterrupted one: a deterministic run never resumes epochs that ran without it."""
    where = dev.type
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        where = f"cuda[{torch.cuda.get_device_name(dev)}, sm_{major}{minor}, fp32 without TF32]"
    key = where if precision == "fp32" else f"{where}/{precision}"
    return key if deterministic else f"{key}/nondeterministic"


class KeepCallback(Protocol):
    def __call__(self, epoch: int, val_top1: float) -> None: ...


def best_epoch(history: list[dict[str, float]]) -> int:
    """The (1-based) epoch with the highest validation top-1; the earliest on a tie."""
    return max(range(len(history)), key=lambda i: (history[i]["val_top1"], -i)) + 1


class BestEpoch:
    """The weights of the best epoch so far (``best_epoch``), kept on the CPU; a no-op unless enabled."""

    def __init__(self, enabled: bool, history: list[dict[str, float]], weights: dict[str, torch.Tensor]):
        self.enabled, self.weights = enabled, weights if enabled else {}
        self.epoch = best_epoch(history) if history else 0

    def update(self, history: list[dict[str, float]], model: nn.Module) -> None:
        if self.enabled and best_epoch(history) == len(history):
            self.epoch = len(history)
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.weights)
