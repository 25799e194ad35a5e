import math

import pytest
import torch
from torch.nn import functional as F

from prunekd.distill import cross_entropy_loss, distillation_loss, kd_loss


def test_kd_loss_matches_a_hand_computed_value():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.5
    # softmax([0.5, 0]) and softmax([0, 0.5]) by hand
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [ps[1], ps[0]]
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = alpha * T**2 * kl + (1 - alpha) * ce
    assert kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=gen), torch.randn(8, 10, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    assert torch.allclose(kd_loss(s, t, y, temperature=4.0, alpha=0.0), F.cross_entropy(s, y))


def test_identical_logits_leave_only_the_hard_term():
    s = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(kd_loss(s, s.clone(), y, temperature=3.0, alpha=1.0), torch.tensor(0.0), atol=1e-6)


def test_distillation_loss_freezes_the_teacher_and_trains_the_student():
    teacher, student = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    loss_fn = distillation_loss(teacher, temperature=2.0, alpha=0.7)
    x, y = torch.randn(5, 3), torch.randint(0, 4, (5,))
    loss_fn(student(x), x, y).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_cross_entropy_loss_with_label_smoothing():
    logits, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    assert torch.allclose(cross_entropy_loss(0.1)(logits, None, y), F.cross_entropy(logits, y, label_smoothing=0.1))
