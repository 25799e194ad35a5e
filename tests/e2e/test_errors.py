"""Bad input gets one clear line naming the cause and exit code 2, with no traceback and no
output written; a failed or killed stage leaves no output. The real CLI runs as a subprocess in
a temporary copy of the repo, on scikit-learn's bundled digits (seconds per stage)."""

import json
import gzip
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from prunekd import data
from prunekd.data import DataError
from prunekd.models import load_model

from ..conftest import BIN, clean_env, copy_repo, digits_params, runs, set_params

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
OUTPUTS = ("data/prepared", "models", "reports")


def prunekd(repo: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prunekd"), *args], cwd=repo, env=clean_env(**env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A repo copy with prepared digits and a trained teacher (the inputs of the later stages)."""
    repo = copy_repo(tmp_path_factory.mktemp("errors"))
    set_params(repo, digits_params)
    for stage in ("prepare", "teacher"):
        proc = prunekd(repo, stage)
        assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(repo, repo.with_name("backup"), symlinks=True)
    return repo


@pytest.fixture
def repo(pristine) -> Path:
    """The module's repo, put back as it was after each test (a test may damage its inputs)."""
    yield pristine
    backup = pristine.with_name("backup")
    for name in (*OUTPUTS, "data/raw", ".prunekd"):
        shutil.rmtree(pristine / name, ignore_errors=True)
        if (backup / name).exists():
            shutil.copytree(backup / name, pristine / name, symlinks=True)


def snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file under the stages' output folders (and any *.tmp), with size and mtime."""
    files = [p for folder in OUTPUTS for p in (repo / folder).rglob("*") if p.is_file()]
    files += [p for p in repo.rglob("*.tmp") if ".git" not in p.parts]
    return {str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def bad_params(repo: Path, change) -> str:
    """A params file like the repo's with ``change`` applied; its name, for ``--params``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "bad.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return "bad.yaml"


def error_line(proc: subprocess.CompletedProcess, stage: str, only_line: bool = True) -> str:
    """The one error line a user error prints; exit code 2, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"prunekd {stage}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    if only_line:  # failed before any work: nothing else on stderr
        assert lines == errors, proc.stderr[-3000:]
    return errors[0]


def fails_cleanly(repo: Path, stage: str, *args: str, names: tuple[str, ...], only_line: bool = True,
                  **env: str) -> str:
    before = snapshot(repo)
    line = error_line(prunekd(repo, stage, *args, **env), stage, only_line)
    for name in names:
        assert name in line, line
    assert snapshot(repo) == before
    return line


# ---- params.yaml ---------------------------------------------------------------------------

def test_unknown_top_level_key(repo):
    params = bad_params(repo, lambda p: p.update(sed=1))
    line = fails_cleanly(repo, "check", "--params", params, names=("sed", "unknown key"))
    assert line == "prunekd check: error: bad.yaml: sed: unknown key (check its spelling)"


def test_misspelled_key_inside_a_section(repo):
    # retrain ft does not read kd at all, and still refuses the typo
    params = bad_params(repo, lambda p: p["kd"].update(temprature=p["kd"].pop("temperature")))
    line = fails_cleanly(repo, "retrain", "--ratio", "0.3", "--mode", "ft", "--seed", "0", "--params", params,
                         names=("kd.temprature", "unknown key"))
    assert line.endswith("bad.yaml: kd.temprature: unknown key (check its spelling)")


def test_wrong_type(repo):
    params = bad_params(repo, lambda p: p["teacher"].update(epochs="ten"))
    fails_cleanly(repo, "teacher", "--params", params, names=("teacher.epochs", "integer", "'ten'"))


@pytest.mark.parametrize("stage, args, section, change, names", [
    ("retrain", ("--ratio", "0.3", "--mode", "ft", "--seed", "0"), "retrain", {"lr": -1},
     ("retrain.lr", "greater than 0", "-1")),
    ("retrain", ("--ratio", "0.3", "--mode", "kd", "--seed", "0"), "retrain", {"train_subset": 100_000},
     ("retrain.train_subset", "100000 is more than the", "images of the training split")),
    ("teacher", (), "teacher", {"train_subset": 100_000},
     ("teacher.train_subset", "100000 is more than the", "images of the training split")),
])
def test_out_of_range_value(repo, stage, args, section, change, names):
    params = bad_params(repo, lambda p: p[section].update(change))
    fails_cleanly(repo, stage, *args, "--params", params, names=names)


@pytest.mark.parametrize("stage, args, section, key, value", [
    ("teacher", (), "model", "arch", "resnet"),
])
def test_unknown_choice(repo, stage, args, section, key, value):
    params = bad_params(repo, lambda p: p[section].update({key: value}))
    line = fails_cleanly(repo, stage, *args, "--params", params, names=(f"{section}.{key}", "unknown value"))
    assert repr(value if isinstance(value, str) else value[-1]) in line


@pytest.mark.parametrize("args, message", [
    (("retrain", "--ratio", "0.3", "--mode", "xx", "--seed", "0"), "argument --mode: invalid choice: 'xx'"),
    (("prune", "--ratio", "1.5"), "argument --ratio: '1.5' is not between 0 and 1"),
])
def test_bad_command_line_option(repo, args, message):
    before = snapshot(repo)
    proc = prunekd(repo, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"usage: prunekd {args[0]}") and len(lines) <= 3, proc.stderr
    assert lines[-1].startswith(f"prunekd {args[0]}: error: {message}"), proc.stderr
    assert snapshot(repo) == before


# ---- data ----------------------------------------------------------------------------------

def fashion_copy(repo: Path, damage) -> str:
    """The system Fashion-MNIST copied into data/raw (first in the lookup order), one file damaged."""
    if not SYSTEM_FASHION.is_dir():
        pytest.skip(f"needs the real Fashion-MNIST in {SYSTEM_FASHION} (Debian package dataset-fashion-mnist)")
    raw = repo / "data/raw/fashion_mnist"
    shutil.copytree(SYSTEM_FASHION, raw)
    damage(raw / "t10k-labels-idx1-ubyte.gz")
    def fashion(p: dict) -> None:  # 1,000 training images, so at most that many to calibrate int8 on
        p["data"].update(dataset="fashion_mnist", train_subset=1000)
        p["quantize"]["calibration_images"] = 256

    return bad_params(repo, fashion)


def truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.unlink()  # a fresh file: the copy may share storage with the system one
    path.write_bytes(blob[: len(blob) // 2])


def alter_one_label(path: Path) -> None:
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # still a valid gzip, one label changed
    path.unlink()
    path.write_bytes(gzip.compress(bytes(payload)))


def test_truncated_dataset_file(repo):
    params = fashion_copy(repo, truncate)
    line = fails_cleanly(repo, "prepare", "--params", params,
                         names=("data/raw/fashion_mnist/t10k-labels-idx1-ubyte.gz", "not a readable gzip"))
    assert "delete it and prepare again" in line


def test_corrupted_dataset_file(repo):
    params = fashion_copy(repo, alter_one_label)
    fails_cleanly(repo, "prepare", "--params", params,
                  names=("data/raw/fashion_mnist/t10k-labels-idx1-ubyte.gz", "checksum mismatch"))


@pytest.mark.parametrize("damage, names", [
    (truncate, ("unreadable prepared split",)),
    (lambda path: torch.save({"x": torch.zeros(3, 1, 8, 8, dtype=torch.uint8), "y": torch.zeros(3, dtype=torch.int64)},
                             path), ("corrupt", "checksum in manifest.json")),
])
def test_damaged_prepared_split(repo, damage, names):
    damage(repo / "data/prepared/train.pt")
    fails_cleanly(repo, "teacher", names=("data/prepared/train.pt", "dvc repro -f prepare", *names))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed: connections are refused


def offline(proxy: str) -> dict[str, str]:
    """Environment in which every download goes through ``proxy`` (a dead one: no network)."""
    return {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy,
            "no_proxy": "", "NO_PROXY": ""}


def test_no_local_data_and_no_network(repo):
    params = bad_params(repo, lambda p: p["data"].update(dataset="mnist"))
    start = time.monotonic()
    line = fails_cleanly(repo, "prepare", "--params", params, only_line=False,  # torchvision prints its attempts
                         names=("MNIST", "no local copy in data/raw/mnist", "download failed"),
                         **offline(f"http://127.0.0.1:{closed_port()}"))
    assert time.monotonic() - start < 60, line
    assert not (repo / "data/raw/mnist").exists()


def test_a_stalled_download_fails_within_the_timeout(tmp_path, monkeypatch):
    """A network that accepts connections and never answers: urllib alone would wait forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.extend(server.accept() for _ in range(4)), daemon=True).start()
    for key, value in offline(f"http://127.0.0.1:{server.getsockname()[1]}").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt, so that it reads the proxy settings
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(DataError, match="no local copy in .*mnist and the download failed"):
        data.DATASETS["mnist"](tmp_path)
    assert time.monotonic() - start < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial download left behind
    server.close()


# ---- model files ---------------------------------------------------------------------------

def flip_a_weight(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    model, _ = load_model(path)
    weight = next(iter(model.state_dict().values())).numpy().tobytes()
    at = bytes(blob).index(weight[:16])  # inside the first tensor's stored bytes
    blob[at] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_missing_model_file(repo):
    fails_cleanly(repo, "retrain", "--ratio", "0.4", "--mode", "ft", "--seed", "0",
                  names=("models/pruned/0.4/model.pt", "model file not found"))


@pytest.mark.parametrize("damage, names", [
    (truncate, ("not a prunekd model file or corrupt", "truncated")),
    (flip_a_weight, ("corrupt", "SHA-256")),
    (lambda path: path.write_text("not a model\n"), ("not a prunekd model file or corrupt",)),
])
def test_corrupted_model_file(repo, damage, names):
    damage(repo / "models/teacher/model.pt")
    fails_cleanly(repo, "prune", "--ratio", "0.3", names=("models/teacher/model.pt", *names))


# ---- training ------------------------------------------------------------------------------

def test_diverging_run_stops_at_once_naming_the_epoch(repo):
    params = bad_params(repo, lambda p: p["teacher"].update(lr=1e6))
    teacher = repo / "models/teacher"
    before = {p.name: p.read_bytes() for p in teacher.iterdir() if p.is_file()} if teacher.is_dir() else {}
    proc = prunekd(repo, "teacher", "--params", params)
    line = error_line(proc, "teacher", only_line=False)
    assert "teacher epoch 1/2: the loss became nan at step" in line and "lower the learning rate (lr 1e+06)" in line
    assert "epoch 2/2" not in proc.stderr  # stopped at once
    # the earlier teacher's outputs stay whole (dvc.lock still names them); nothing half-written is left
    after = {p.name: p.read_bytes() for p in teacher.iterdir() if p.is_file()} if teacher.is_dir() else {}
    assert after == before and not [p for p in teacher.glob(".*.tmp")]


# ---- atomic outputs ------------------------------------------------------------------------

def start_then_kill(repo: Path, args: list[str], ready: Path, timeout: float = 300) -> None:
    """Run ``prunekd *args``, SIGKILL it as soon as ``ready`` exists."""
    with open(repo / "killed.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "prunekd"), *args], cwd=repo, env=clean_env(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, (repo / "killed.log").read_text()[-2000:]


def test_killed_mid_training_keeps_the_earlier_outputs_whole(repo):
    params = bad_params(repo, lambda p: p["teacher"].update(epochs=200))
    before = {p.name: p.read_bytes() for p in (repo / "models/teacher").iterdir() if p.is_file()}
    assert "model.pt" in before  # an earlier run's outputs
    start_then_kill(repo, ["teacher", "--params", params], repo / ".prunekd/checkpoints/teacher/checkpoint.pt")
    after = {p.name: p.read_bytes() for p in (repo / "models/teacher").iterdir() if p.is_file()}
    assert after == before  # nothing half-written, nothing lost


def test_killed_while_measuring_keeps_the_earlier_outputs_and_dvc_ignores_the_scratch_folder(repo):
    # evaluating on the test split and logging to MLflow keep the window between saving the model
    # and swapping it in about a second long
    scratch = repo / "models/pruned/0.3/.model.pt.tmp"
    folder = repo / "models/pruned/0.3"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    start_then_kill(repo, ["prune", "--ratio", "0.3"], scratch / "model.pt")
    assert (scratch / "model.pt").is_file()  # killed after saving, before the swap
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # the earlier ones, whole
    # the scratch folder sits inside report's dependency models/pruned: DVC and git must not see it
    ignored = subprocess.run([str(BIN / "dvc"), "check-ignore", "models/pruned/0.3/.model.pt.tmp"], cwd=repo,
                             env=clean_env(), capture_output=True, text=True)
    assert ignored.returncode == 0 and ".model.pt.tmp" in ignored.stdout, ignored.stdout + ignored.stderr
    status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=repo, capture_output=True, text=True)
    assert ".tmp" not in status.stdout
    # the next run starts over and replaces the leftovers
    proc = prunekd(repo, "prune", "--ratio", "0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (repo / "models/pruned").iterdir()) == ["0.3"]
    assert sorted(p.name for p in (repo / "models/pruned/0.3").iterdir()) == ["lineage.json", "metrics.json",
                                                                          "model.onnx", "model.pt", "predictions.npy"]


# ---- interrupted and concurrent runs -----------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_training_ends_the_mlflow_run_as_killed_in_one_line(repo, sig):
    params = bad_params(repo, lambda p: p["teacher"].update(epochs=200))
    checkpoint = repo / ".prunekd/checkpoints/teacher/checkpoint.pt"
    proc = subprocess.Popen([str(BIN / "prunekd"), "teacher", "--params", params], cwd=repo, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"prunekd teacher: interrupted ({sig.name}); rerun it to resume"
    assert checkpoint.is_file()  # kept, to resume from
    killed = [r for r in runs(repo) if r.data.tags["dvc_stage"] == "teacher"]
    assert [r.info.status for r in killed][:1] == ["KILLED"]  # the newest run


def held(lock: Path) -> bool:
    """Whether another process holds ``lock`` (an flock)."""
    import fcntl

    try:
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def test_a_second_run_of_a_running_stage_stops_and_leaves_the_first_alone(repo):
    params = bad_params(repo, lambda p: p["teacher"].update(epochs=10))
    first = subprocess.Popen([str(BIN / "prunekd"), "teacher", "--params", params], cwd=repo, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not held(repo / ".prunekd/locks/teacher.lock") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = prunekd(repo, "teacher", "--params", params)
    line = error_line(second, "teacher")
    assert "another run of teacher is in progress" in line and f"pid {first.pid}" in line
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert {p.name for p in (repo / "models/teacher").iterdir()} >= {"model.pt", "model.onnx", "metrics.json"}


def test_the_sensitivity_schedule_without_its_table_touches_no_output(repo):
    params = bad_params(repo, lambda p: p["prune"].update(schedule="sensitivity"))
    shutil.rmtree(repo / "reports/sensitivity", ignore_errors=True)
    (repo / "models/pruned/0.3").mkdir(parents=True, exist_ok=True)
    (repo / "models/pruned/0.3/model.pt").write_bytes(b"an earlier output")
    proc = prunekd(repo, "prune", "--ratio", "0.3", "--params", params)
    assert "curves.csv: not found" in error_line(proc, "prune")
    assert (repo / "models/pruned/0.3/model.pt").read_bytes() == b"an earlier output"


# ---- foreign or hand-edited inputs, values the code cannot use ----------------------------------

def test_a_validation_fraction_that_leaves_no_training_images(repo):
    params = bad_params(repo, lambda p: p["data"].update(val_fraction=0.9999))
    line = error_line(prunekd(repo, "prepare", "--params", params), "prepare")
    assert "data.val_fraction: 0.9999 of" in line and "leaves none to train on" in line


def test_a_manifest_missing_keys_is_refused_before_training(repo):
    manifest = repo / "data/prepared/manifest.json"
    data = json.loads(manifest.read_text())
    del data["mean"]
    manifest.write_text(json.dumps(data))
    line = error_line(prunekd(repo, "teacher"), "teacher")
    assert "manifest.json: not a prunekd manifest (missing mean)" in line
    assert (repo / "models/teacher/model.pt").is_file()  # the earlier outputs untouched


def test_an_empty_sensitivity_table(repo):
    params = bad_params(repo, lambda p: p["prune"].update(schedule="sensitivity"))
    (repo / "reports/sensitivity").mkdir(parents=True, exist_ok=True)
    (repo / "reports/sensitivity/curves.csv").write_text("layer,index,ratio,kept,channels,top1,drop\n")
    line = error_line(prunekd(repo, "prune", "--ratio", "0.3", "--params", params), "prune")
    assert "curves.csv: no sensitivity rows" in line


def test_a_corrupt_tracking_store(repo):
    store = repo / "mlflow.db"
    good = store.read_bytes()
    store.write_bytes(b"this is not a database" * 100)
    try:
        line = error_line(prunekd(repo, "teacher"), "teacher")
    finally:
        store.write_bytes(good)
    assert "mlflow.db: not a usable SQLite database" in line
    assert (repo / "models/teacher/model.pt").is_file()


def test_a_tracking_uri_with_an_unknown_scheme(repo):
    line = error_line(prunekd(repo, "teacher", MLFLOW_TRACKING_URI="postgress://db/mlflow"), "teacher")
    assert "postgress://db/mlflow (MLFLOW_TRACKING_URI): unknown scheme" in line


def test_a_tracking_switch_neither_on_nor_off(repo):
    before = snapshot(repo)
    line = error_line(prunekd(repo, "teacher", PRUNEKD_TRACKING="of"), "teacher")
    assert "PRUNEKD_TRACKING='of': expected 'off' (record nothing) or 'on'" in line
    assert snapshot(repo) == before


# ---- integrity and lineage are not optional ------------------------------------------------------

def test_a_model_file_without_its_digest_is_refused(repo):
    path = repo / "models/teacher/model.pt"
    blob = torch.load(path, weights_only=True)
    del blob["sha256"]
    first = next(iter(blob["state_dict"]))
    blob["state_dict"][first] = blob["state_dict"][first] + 1  # and one weight changed
    torch.save(blob, path)
    line = error_line(prunekd(repo, "prune", "--ratio", "0.3"), "prune")
    assert "models/teacher/model.pt: holds no SHA-256 of its contents" in line


def test_a_pruned_model_is_checked_against_its_ratio_and_teacher(repo):
    assert prunekd(repo, "prune", "--ratio", "0.3").returncode == 0
    (repo / "models/pruned/0.5").mkdir(parents=True)
    shutil.copy(repo / "models/pruned/0.3/model.pt", repo / "models/pruned/0.5/model.pt")
    line = error_line(prunekd(repo, "retrain", "--ratio", "0.5", "--mode", "ft", "--seed", "0"), "retrain")
    assert "models/pruned/0.5/model.pt: pruned at ratio 0.3, not 0.5; rerun prune@0.5" in line
    shutil.copy(repo / "models/teacher/model.pt", repo / "models/pruned/0.5/model.pt")  # the teacher itself
    line = error_line(prunekd(repo, "retrain", "--ratio", "0.5", "--mode", "ft", "--seed", "0"), "retrain")
    assert "models/pruned/0.5/model.pt: not a pruned model" in line
    assert not (repo / "models/retrained").exists()


def test_a_teacher_of_another_architecture_is_refused(repo):
    params = bad_params(repo, lambda p: p["model"].update(arch="alexnet"))
    line = error_line(prunekd(repo, "prune", "--ratio", "0.3", "--params", params), "prune")
    assert "models/teacher/model.pt: a lenet5 model, but model.arch is alexnet" in line


def test_runs_where_there_is_no_store_says_so_and_creates_none(tmp_path):
    proc = subprocess.run([str(BIN / "prunekd"), "runs"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no tracking store at sqlite:///" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()


def test_runs_with_tracking_off_says_there_is_nothing_to_list(tmp_path):
    proc = subprocess.run([str(BIN / "prunekd"), "runs"], cwd=tmp_path, env=clean_env(PRUNEKD_TRACKING="off"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("prunekd runs: error: PRUNEKD_TRACKING=off: tracking is "
                                                           "off"), proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()
