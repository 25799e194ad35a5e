"""Losses that the one training loop takes: cross-entropy and Hinton knowledge distillation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .train import LossFn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), batch-mean.

    The T^2 factor keeps the soft-target gradients on the scale of the hard-target ones
    (Hinton et al. 2015, section 2).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return loss


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """KD against a frozen teacher that sees the same (augmented) batch as the student."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return kd_loss(logits, teacher_logits, y, temperature=temperature, alpha=alpha)
    return loss
