"""Resumable training: a run killed after an epoch, rerun, ends where an uninterrupted run ends."""

import io
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from prunekd.checkpoint import Checkpoint, resumable
from prunekd.data import Split, load_digits_dataset, split_train_val
from prunekd.distill import cross_entropy_loss, distillation_loss
from prunekd.models import build_model
from prunekd.config import TrainConfig
from prunekd.train import Normalization, fit

from ..conftest import BIN, copy_repo, digits_params, dvc, runs, set_params

NORM = Normalization([0.3], [0.4])
SCHED = TrainConfig(epochs=3, batch_size=32, lr=0.1, translate=1, hflip=False)


class Killed(Exception):
    """Stands for a kill: raised by the epoch callback, so fit stops between two epochs."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread, here and in the stages run as subprocesses: every run compared has the
    same thread count (which decides summation order), and a busy machine is not oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[Split, Split]:
    return split_train_val(load_digits_dataset(None).train, 0.2, seed=0)


def lenet(init_seed: int = 123):
    torch.manual_seed(init_seed)
    return build_model("lenet5", 10, (1, 8, 8))


def train(data, checkpoint=None, kill_at=None, sched=SCHED, loss=None, init_seed=123, seed=0):
    """(model, [(epoch, metrics)] the callback saw); ``kill_at``: raise Killed in that epoch's callback."""
    model, seen = lenet(init_seed), []

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics))
        if epoch == kill_at:
            raise Killed

    fit(model, *data, NORM, sched, loss or cross_entropy_loss(), seed, on_epoch, name="t", checkpoint=checkpoint)
    return model, seen


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


LOSSES = {"ce": lambda: cross_entropy_loss(), "kd": lambda: distillation_loss(lenet(7), 4.0, 0.9)}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_killed_and_resumed_fit_equals_uninterrupted(digits, tmp_path, capsys, loss):
    reference, reference_seen = train(digits, loss=LOSSES[loss]())
    with pytest.raises(Killed):  # killed before epoch 2 is saved: the checkpoint holds epoch 1
        train(digits, Checkpoint("t", (loss,), tmp_path), kill_at=2, loss=LOSSES[loss]())
    assert torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    checkpoint = Checkpoint("t", (loss,), tmp_path)
    resumed, seen = train(digits, checkpoint, loss=LOSSES[loss]())
    assert f"t: resuming from epoch 1/3 (checkpoint {tmp_path / 't'})" in capsys.readouterr().err
    assert checkpoint.resumed_from == 1 and checkpoint.tags() == {"resumed_from_epoch": "1"}
    assert same_weights(resumed, reference)
    assert seen == reference_seen  # epoch 1 replayed from the checkpoint, 2 and 3 trained again


def test_resuming_with_another_thread_count_says_so(digits, tmp_path, capsys):
    with pytest.raises(Killed):
        train(digits, Checkpoint("t", (), tmp_path), kill_at=3)
    torch.set_num_threads(2)  # the fixture restores the count
    train(digits, Checkpoint("t", (), tmp_path))
    assert ("t: the checkpoint was made with 1 torch threads, this run has 2; the last digits may differ"
            in capsys.readouterr().err)


KD = {"temperature": 4.0, "alpha": 0.9}
STALE = {  # a change to anything that decides training makes the checkpoint stale
    "lr": dict(sched=TrainConfig(epochs=3, batch_size=32, lr=0.05, translate=1, hflip=False)),
    "seed": dict(seed=1),
    "start weights": dict(init_seed=5),
    "loss settings": dict(identity=(KD | {"temperature": 2.0},)),
    "data": dict(subset=1000),
}


@pytest.mark.parametrize("change", sorted(STALE))
def test_a_stale_checkpoint_is_not_resumed(digits, tmp_path, capsys, change):
    kwargs = dict(STALE[change])
    identity, subset = kwargs.pop("identity", (KD,)), kwargs.pop("subset", None)
    with pytest.raises(Killed):
        train(digits, Checkpoint("t", (KD,), tmp_path), kill_at=2)
    data = (Split(digits[0].x[:subset], digits[0].y[:subset]), digits[1]) if subset else digits
    reference, _ = train(data, **kwargs)
    capsys.readouterr()
    model, seen = train(data, Checkpoint("t", identity, tmp_path), **kwargs)
    err = capsys.readouterr().err
    assert "t: ignoring checkpoint" in err and "other settings" in err and "resuming" not in err
    assert [e for e, _ in seen] == [1, 2, 3] and same_weights(model, reference)


def corrupt(path):
    blob = path.read_bytes()
    return {
        "truncated": lambda: path.write_bytes(blob[: len(blob) // 2]),
        "garbage": lambda: path.write_bytes(os.urandom(len(blob))),
        "empty": lambda: path.write_bytes(b""),
        "not a checkpoint": lambda: torch.save({"epoch": 1}, path),
        "pickled object": lambda: torch.save({"rng": torch.nn.Linear(1, 1)}, path),  # weights_only refuses it
    }


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a checkpoint", "pickled object"])
def test_a_corrupt_checkpoint_is_ignored_with_a_message(digits, tmp_path, capsys, damage):
    with pytest.raises(Killed):
        train(digits, Checkpoint("t", (), tmp_path), kill_at=2)
    corrupt(tmp_path / "t" / "checkpoint.pt")[damage]()
    capsys.readouterr()
    model, seen = train(digits, Checkpoint("t", (), tmp_path))
    lines = [line for line in capsys.readouterr().err.splitlines() if "checkpoint" in line]
    assert len(lines) == 1 and lines[0].startswith(f"t: ignoring checkpoint {tmp_path / 't' / 'checkpoint.pt'}: "
                                                   "unreadable (") and lines[0].endswith("training from scratch")
    assert [e for e, _ in seen] == [1, 2, 3] and same_weights(model, train(digits)[0])


def test_the_checkpoint_is_removed_after_success_and_kept_after_a_failure(digits, tmp_path):
    folder = tmp_path / "t"
    with pytest.raises(Killed), resumable("t", root=tmp_path) as checkpoint:
        train(digits, checkpoint, kill_at=2)
    assert (folder / "checkpoint.pt").is_file()
    with resumable("t", root=tmp_path) as checkpoint:
        train(digits, checkpoint)
        assert checkpoint.resumed_from == 1 and (folder / "checkpoint.pt").is_file()
    assert not folder.exists()


# ---- the real stage, killed with SIGKILL and rerun by `dvc repro` --------------------------

TEACHER_EPOCHS = 20  # about 80 ms each: the kill has over a second to land before the last one


def teacher_params(params: dict) -> dict:
    """LeNet-5 on digits, with epochs enough that the kill lands while the teacher still trains."""
    digits_params(params)
    params["teacher"].update(epochs=TEACHER_EPOCHS, batch_size=16)
    return params


def kill_after_first_checkpoint(repo, timeout: float = 300) -> int:
    """Start `prunekd teacher`, SIGKILL it once an epoch's checkpoint is on disk; the epoch it holds."""
    checkpoint = repo / ".prunekd" / "checkpoints" / "teacher" / "checkpoint.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(repo / "killed.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "prunekd"), "teacher"], cwd=repo, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, (repo / "killed.log").read_text()[-2000:]
    return torch.load(checkpoint, weights_only=True)["epoch"]


def test_teacher_killed_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    repo = copy_repo(tmp_path)
    set_params(repo, teacher_params)
    dvc(repo, "repro", "prepare")

    epoch = kill_after_first_checkpoint(repo)
    assert 1 <= epoch < TEACHER_EPOCHS and not (repo / "models/teacher/model.pt").exists()
    output = dvc(repo, "repro", "teacher")
    assert f"teacher: resuming from epoch {epoch}/{TEACHER_EPOCHS} (checkpoint .prunekd/checkpoints/teacher)" in output
    assert not (repo / ".prunekd/checkpoints/teacher").exists()

    # The rerun's MLflow run holds the whole per-epoch curve, the replayed epochs included.
    finished = [r for r in runs(repo) if r.data.tags["dvc_stage"] == "teacher" and r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.tags["resumed_from_epoch"] == str(epoch)
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert ([m.step for m in client.get_metric_history(finished[0].info.run_id, "val_top1")]
            == list(range(1, TEACHER_EPOCHS + 1)))

    # The reference: the same stage on the same prepared data, forced to train uninterrupted from
    # scratch (no checkpoint is left to resume).
    teacher = repo / "models/teacher"
    resumed = {name: (teacher / name).read_bytes() for name in ("model.pt", "metrics.json")}
    output = dvc(repo, "repro", "--force", "--single-item", "teacher")
    assert "resuming" not in output and "checkpoint" not in output
    uninterrupted = {name: (teacher / name).read_bytes() for name in ("model.pt", "metrics.json")}
    # the same bytes: the model file holds the model alone, not the run that made it
    assert resumed["model.pt"] == uninterrupted["model.pt"]
    a, b = (torch.load(io.BytesIO(files["model.pt"]), weights_only=True) for files in (uninterrupted, resumed))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    ma, mb = (yaml.safe_load(files["metrics.json"]) for files in (uninterrupted, resumed))
    assert (ma["top1"], ma["params"], ma["macs"]) == (mb["top1"], mb["params"], mb["macs"])
