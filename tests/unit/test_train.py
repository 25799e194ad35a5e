import pytest
import torch

from prunekd.data import load_digits_dataset, split_train_val
from prunekd.distill import cross_entropy_loss
from prunekd.models import build_model
from prunekd.config import TrainConfig
from prunekd.train import Normalization, evaluate, fit

NORM = Normalization([0.3], [0.4])


def train_digits(seed: int):
    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    model = build_model("lenet5", 10, (1, 8, 8))
    torch.manual_seed(123)  # same init; fit's seed drives shuffling and augmentation
    seen = []
    cfg = TrainConfig(epochs=8, batch_size=32, lr=0.1, translate=1, hflip=False)
    fit(model, train, val, NORM, cfg, cross_entropy_loss(), seed, on_epoch=lambda e, m: seen.append((e, m)))
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


def trained_mobilenet_on_digits():
    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    torch.manual_seed(0)
    model = build_model("mobilenet_v1", 10, (1, 8, 8), 0.25)
    fit(model, train, val, NORM, TrainConfig(epochs=3, batch_size=32, lr=0.05, hflip=False), cross_entropy_loss(), 0)
    return model, train, ds.test


def test_recalibration_changes_only_batchnorm_statistics_and_is_deterministic():
    from prunekd.prune import prune
    from prunekd.train import recalibrate_batchnorm

    model, train, test = trained_mobilenet_on_digits()
    pruned = prune(model, 0.5, "channels", "l1").model
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    again = prune(model, 0.5, "channels", "l1").model
    recalibrate_batchnorm(pruned, train, NORM, n_batches=4, seed=1, batch_size=64)
    recalibrate_batchnorm(again, train, NORM, n_batches=4, seed=1, batch_size=64)
    after = pruned.state_dict()
    stats = {k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(not torch.equal(before[k], after[k]) for k in stats if not k.endswith("tracked"))  # all re-estimated
    assert all(torch.equal(before[k], after[k]) for k in after if k not in stats)  # weights untouched
    assert all(torch.equal(after[k], v) for k, v in again.state_dict().items())  # same seed, same statistics
    assert not pruned.training and all(m.momentum == 0.1 for m in pruned.modules()
                                       if isinstance(m, torch.nn.BatchNorm2d))
    # the statistics are those of the images forwarded: each channel's mean over them
    first = pruned.stem[1].running_mean
    assert torch.isfinite(first).all() and first.abs().sum() > 0
    assert recalibrate_batchnorm(again, train, NORM, n_batches=0) is again  # 0 batches: off
    assert all(torch.equal(after[k], v) for k, v in again.state_dict().items())


def sabotaged_loss(good_epochs: int, steps_per_epoch: int):
    """Cross-entropy for ``good_epochs``, then cross-entropy against the wrong labels: validation
    accuracy falls afterwards, so the best epoch is not the last."""
    calls = [0]

    def loss(logits, x, y):
        calls[0] += 1
        wrong = calls[0] > good_epochs * steps_per_epoch
        return torch.nn.functional.cross_entropy(logits, (y + 1) % 10 if wrong else y)
    return loss


def keep_best(checkpoint=None, kill_at=None):
    import math

    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.05, hflip=False, keep="best_val")
    torch.manual_seed(0)
    model = build_model("lenet5", 10, (1, 8, 8))
    snapshots, kept = {}, []

    def on_epoch(epoch, metrics):
        snapshots[epoch] = (metrics["val_top1"], {k: v.clone() for k, v in model.state_dict().items()})
        if epoch == kill_at:
            raise KeyboardInterrupt

    loss = sabotaged_loss(2, math.ceil(len(train) / cfg.batch_size))
    fit(model, train, val, NORM, cfg, loss, 0, on_epoch, checkpoint=checkpoint,
        on_keep=lambda e, v: kept.append((e, v)))
    return model, snapshots, kept


def test_keep_best_val_ends_with_the_best_epochs_weights_and_says_which():
    model, snapshots, [(epoch, val_top1)] = keep_best()
    best = max(snapshots, key=lambda e: (snapshots[e][0], -e))
    assert epoch == best < 4 and val_top1 == snapshots[best][0]
    assert snapshots[4][0] < val_top1  # the sabotage worked: the last epoch is worse
    assert all(torch.equal(v, snapshots[best][1][k]) for k, v in model.state_dict().items())


def test_keep_best_val_survives_a_resume(tmp_path):
    import pytest

    from prunekd.checkpoint import Checkpoint

    reference, _, kept = keep_best()
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 4's callback: the checkpoint holds epoch 3
        keep_best(Checkpoint("t", (), tmp_path), kill_at=4)
    resumed, _, kept_again = keep_best(Checkpoint("t", (), tmp_path))
    assert kept_again == kept
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in resumed.state_dict().items())


def fit_digits(compute=None, seed: int = 0, loss=None):
    """LeNet-5 on digits for two epochs under params.yaml's ``train`` section ``compute``."""
    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    torch.manual_seed(123)
    model = build_model("lenet5", 10, (1, 8, 8))
    seen = []
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.1, translate=1, hflip=False)
    fit(model, train, val, NORM, cfg, loss or cross_entropy_loss(), seed, on_epoch=lambda e, m: seen.append(m),
        compute=compute)
    return model, seen


def same_state(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_deterministic_training_is_applied_and_changes_nothing_on_the_cpu(monkeypatch):
    from prunekd.config import ComputeConfig

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    was = torch.are_deterministic_algorithms_enabled()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as on a GPU: TF32 convs
    try:
        loose, loose_seen = fit_digits(ComputeConfig(deterministic=False))
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        strict, strict_seen = fit_digits(ComputeConfig(deterministic=True))
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        import os
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32  # fp32 is fp32
    finally:
        torch.use_deterministic_algorithms(was)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert same_state(loose, strict) and loose_seen == strict_seen
    plain, plain_seen = fit_digits()  # no settings: fp32, as before the section existed
    assert same_state(plain, strict) and plain_seen == strict_seen


def test_bf16_precision_trains_under_autocast():
    from prunekd.config import ComputeConfig

    fp32, _ = fit_digits(ComputeConfig(precision="fp32"))
    dtypes = set()

    def loss(logits, x, y):  # what the loss is computed from: fp32 logits, out of autocast
        dtypes.add((logits.dtype, torch.is_autocast_cpu_enabled()))
        return cross_entropy_loss()(logits, x, y)
    bf16, seen = fit_digits(ComputeConfig(precision="bf16"), loss=loss)
    assert dtypes == {(torch.float32, False)}
    assert not same_state(fp32, bf16)  # other arithmetic, other weights
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # the weights stay fp32
    assert seen[-1]["val_top1"] > 30 and all(torch.isfinite(p).all() for p in bf16.parameters())
    again, _ = fit_digits(ComputeConfig(precision="bf16"))
    assert same_state(bf16, again)


def test_a_checkpoint_is_keyed_on_the_precision_determinism_and_gpu_model(monkeypatch):
    from prunekd.train import compute_key

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    gpu = {"name": "NVIDIA H100", "capability": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: gpu["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: gpu["capability"])
    assert compute_key(cpu, "fp32") == "cpu"  # what fp32 checkpoints were keyed on before
    keys = {compute_key(cpu, "fp32"), compute_key(cpu, "bf16"), compute_key(cuda, "fp32"),
            compute_key(cpu, "fp32", deterministic=False)}
    gpu.update(name="NVIDIA A100", capability=(8, 0))  # another GPU computes other bits: never resumed
    keys.add(compute_key(cuda, "fp32"))
    assert len(keys) == 5


def test_a_deterministic_run_never_resumes_epochs_run_without_determinism(tmp_path):
    from prunekd.checkpoint import Checkpoint
    from prunekd.config import ComputeConfig

    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.1, translate=1, hflip=False)

    def resumed_from(deterministic: bool) -> int:
        torch.manual_seed(123)
        checkpoint = Checkpoint("t", (), tmp_path)
        fit(build_model("lenet5", 10, (1, 8, 8)), train, val, NORM, cfg, cross_entropy_loss(), 0,
            checkpoint=checkpoint, compute=ComputeConfig(deterministic=deterministic))
        return checkpoint.resumed_from

    was = torch.are_deterministic_algorithms_enabled()
    try:
        assert resumed_from(False) == 0
        assert resumed_from(False) == 2  # the same settings resume (here: both epochs done)
        assert resumed_from(True) == 0  # with determinism, those epochs are not taken
    finally:
        torch.use_deterministic_algorithms(was)


def test_the_cpu_keeps_channels_last_and_its_data_where_it_is():
    from prunekd.train import memory_format, place, resident

    cpu = torch.device("cpu")
    assert memory_format(cpu) == torch.channels_last and memory_format(torch.device("cuda")) == torch.contiguous_format
    train, _ = split_train_val(load_digits_dataset(None).train, 0.2, seed=0)
    assert resident(train, cpu) is train
    model = place(build_model("lenet5", 10, (1, 8, 8)), cpu)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_diverging_loss_is_caught_at_its_step_on_the_cpu():
    import pytest

    from prunekd.train import DivergenceError

    ds = load_digits_dataset(None)
    train, val = split_train_val(ds.train, 0.2, seed=0)
    calls = [0]

    def loss(logits, x, y):
        calls[0] += 1
        value = torch.nn.functional.cross_entropy(logits, y)
        return value * float("nan") if calls[0] == 7 else value

    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.1, hflip=False)
    with pytest.raises(DivergenceError, match=r"t epoch 1/1: the loss became nan at step 7/\d+, so training diverged"):
        fit(build_model("lenet5", 10, (1, 8, 8)), train, val, NORM, cfg, loss, 0, name="t")
    assert calls[0] == 7  # no step after the bad one


@pytest.mark.parametrize("n", [10, 127, 128, 129, 256, 257, 385])
def test_an_epochs_step_count_is_the_number_of_training_batches(n):
    """The schedule's length and the end-of-epoch finiteness check (on CUDA, the only check in an
    epoch's last steps) count the batches the epoch runs: a last batch of one image joins the one
    before it, so 129 images at batch 128 are one step, not two."""
    from prunekd.data import Split, batches
    from prunekd.train import train_steps

    split = Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))
    ran = list(batches(split, 128, torch.Generator().manual_seed(0)))
    assert train_steps(n, 128) == len(ran) and sum(len(y) for _, y in ran) == n
    assert min(len(y) for _, y in ran) > 1


def test_recalibration_never_forwards_a_single_image_batch_norm_cannot_normalise():
    """BatchNorm in training mode refuses one value per channel (a BatchNorm1d, or 1x1 feature
    maps): 129 images at batch 128 are recalibrated as one batch of 129."""
    from prunekd.data import Split
    from prunekd.train import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    split = Split(torch.randint(0, 255, (129, 1, 2, 2), dtype=torch.uint8), torch.zeros(129, dtype=torch.int64))
    recalibrate_batchnorm(model, split, Normalization([0.5], [0.25]), n_batches=2, batch_size=128)
    assert model[2].num_batches_tracked.item() == 1
