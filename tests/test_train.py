import torch

from prunekd.data import load_digits_dataset, split_train_val
from prunekd.distill import cross_entropy_loss
from prunekd.models import build_model
from prunekd.train import Normalization, Schedule, evaluate, fit

NORM = Normalization([0.3], [0.4])


def train_digits(seed: int):
    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    model = build_model("lenet5", 10, (1, 8, 8))
    torch.manual_seed(123)  # same init; fit's seed drives shuffling and augmentation
    seen = []
    fit(model, train, val, NORM, Schedule(epochs=8, batch_size=32, lr=0.1, translate=1), cross_entropy_loss(), seed,
        on_epoch=lambda e, m: seen.append((e, m)))
    return model, seen, ds.test


def test_training_learns_and_reports_every_epoch():
    model, seen, test = train_digits(seed=0)
    assert [e for e, _ in seen] == list(range(1, 9))
    assert {"train_loss", "train_top1", "val_top1", "val_loss"} <= set(seen[-1][1])
    assert evaluate(model, test, NORM)["top1"] > 80


def test_same_seed_same_weights():
    a, _, _ = train_digits(seed=0)
    b, _, _ = train_digits(seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
