"""Team sharing, end to end: the tiny pipeline logs into a real `mlflow server` process, a second
client process follows the lineage and loads the registered model, and a teammate's clone gets
every result from a real DVC remote without retraining."""

import contextlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from prunekd.tracking import follow_project, free_port, server

from ..conftest import BIN, clean_env, copy_repo, digits_branch_params, digits_sweep_params, dvc, ran, set_params


MODEL = "prunekd-digits-lenet5"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Alice's repo after `dvc repro` against a team server, committed and pushed to a DVC remote."""
    base = tmp_path_factory.mktemp("team")
    (base / "server").mkdir()
    with server(f"sqlite:///{base / 'server' / 'mlflow.db'}", base / "server" / "artifacts") as uri:
        alice = base / "alice"
        alice.mkdir()
        copy_repo(alice)
        set_params(alice, digits_branch_params)  # one ratio x {ft, kd} x one seed: what a team shares
        output = dvc(alice, "repro", env={"MLFLOW_TRACKING_URI": uri})
        dvc(alice, "remote", "modify", "--local", "team", "url", str(base / "remote"))
        git(alice, "add", "-A")
        git(alice, "commit", "-qm", "tiny sweep")
        dvc(alice, "push")
        yield {"uri": uri, "alice": alice, "base": base, "output": output}


CLIENT = r'''
import json, sys
import mlflow, torch
from mlflow.tracking import MlflowClient
from prunekd.data import load_prepared, normalize
from prunekd.models import load_model
from prunekd.train import Normalization, evaluate
from pathlib import Path

repo, model_name = sys.argv[1], sys.argv[2]
client = MlflowClient()
exp = client.get_experiment_by_name("prunekd")
found = client.search_runs([exp.experiment_id], "tags.ratio = '0.3' and tags.mode = 'kd' and tags.`prunekd.stage` = 'retrain'")
kd = found[0]
teacher = client.get_run(kd.data.tags["teacher_run_id"])
pruned = client.get_run(kd.data.tags["prune_run_id"])
report = client.search_runs([exp.experiment_id], "tags.`prunekd.stage` = 'report'")
best = client.get_model_version_by_alias(model_name, "best")
best_run = client.get_run(best.run_id)

prepared = load_prepared(Path(repo) / "data" / "prepared")
norm = Normalization(prepared.manifest["mean"], prepared.manifest["std"])
exported = mlflow.pytorch.load_model(f"models:/{model_name}@best")  # MLflow's own loader (torch.export)
with torch.no_grad():
    x = normalize(prepared.test.x, norm.mean, norm.std).contiguous()
    exported_top1 = 100.0 * (exported(x).argmax(1) == prepared.test.y).float().mean().item()
deploy = mlflow.onnx.load_model(f"models:/{model_name}-onnx@best")  # the deploy form, ONNX flavour
deploy_tags = client.get_model_version_by_alias(model_name + "-onnx", "best").tags  # fp32 or int8, the faster
import onnxruntime
session = onnxruntime.InferenceSession(deploy.SerializeToString(), providers=["CPUExecutionProvider"])
logits = session.run(None, {"input": x.numpy()})[0]
onnx_top1 = 100.0 * float((logits.argmax(1) == prepared.test.y.numpy()).mean())
folder = mlflow.artifacts.download_artifacts(f"models:/{model_name}@best")
own, meta = load_model(f"{folder}/extra_files/model.pt")  # prunekd's pickle-free file, weights_only
print(json.dumps({
    "found": len(found), "kd_stage": kd.data.tags["dvc_stage"], "kd_status": kd.info.status,
    "kd_params": kd.data.params, "kd_metrics": kd.data.metrics, "kd_tags": kd.data.tags,
    "kd_inputs": [(d.dataset.name, d.dataset.digest) for d in kd.inputs.dataset_inputs],
    "teacher_stage": teacher.data.tags["prunekd.stage"], "teacher_id": teacher.info.run_id,
    "pruned_teacher": pruned.data.tags["teacher_run_id"], "pruned_stage": pruned.data.tags["prunekd.stage"],
    "pruned_metrics": pruned.data.metrics, "onnx_top1": onnx_top1, "deploy_tags": deploy_tags,
    "onnx_aliases": sorted(client.get_registered_model(model_name + "-onnx").aliases),
    "report_ids": [r.info.run_id for r in report],
    "best_run": best.run_id, "best_run_top1": best_run.data.metrics["test_top1"],
    "best_run_stage": best_run.data.tags["prunekd.stage"],
    "exported_top1": exported_top1, "own_top1": evaluate(own, prepared.test, norm)["top1"],
    "own_run_id": json.loads(Path(f"{folder}/extra_files/lineage.json").read_text())["mlflow_run_id"],
    "own_meta": meta,
    "aliases": sorted(client.get_registered_model(model_name).aliases),
}))
'''


@pytest.fixture(scope="module")
def second_client(team):
    """What a teammate's separate process sees on the server."""
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(team["alice"]), MODEL], capture_output=True,
                          text=True, env=clean_env(MLFLOW_TRACKING_URI=team["uri"]), cwd=team["base"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_client_finds_the_run_by_ratio_and_mode(second_client):
    seen = second_client
    assert seen["found"] == 1 and seen["kd_stage"] == "retrain@0.3-kd-0" and seen["kd_status"] == "FINISHED"
    params = seen["kd_params"]
    assert (params["ratio"], params["mode"], params["retrain_seed"]) == ("0.3", "kd", "0")
    assert (params["unit"], params["criterion"]) == ("params", "l1")
    assert params["kd.temperature"] == "4.0" and params["retrain.epochs"] == "1"
    for metric in ("test_top1", "params", "macs", "size_mb", "train_loss", "val_top1"):
        assert metric in seen["kd_metrics"], metric
    # the latency stage times each pruned architecture once and logs it on that architecture's run
    for metric in ("median_ms_onnxruntime_b1", "speedup_onnxruntime_b1", "median_ms_torch_b8"):
        assert metric in seen["pruned_metrics"], metric


def test_the_registered_deploy_form_loads_with_mlflows_onnx_flavour_and_runs_in_onnxruntime(second_client):
    seen = second_client
    assert seen["onnx_aliases"] == seen["aliases"]
    tags = seen["deploy_tags"]
    if tags["precision"] == "fp32":
        # the same network as the PyTorch flavour, BatchNorm folded: rounding may flip a borderline image
        assert abs(seen["onnx_top1"] - seen["own_top1"]) <= 0.05
    else:  # its int8 form, the faster one: the accuracy its quantize run measured
        assert abs(seen["onnx_top1"] - float(tags["test_top1"])) <= 0.01


def test_second_client_follows_a_kd_run_to_its_teacher_and_data(team, second_client):
    seen = second_client
    assert seen["teacher_stage"] == "teacher" and seen["pruned_stage"] == "prune"
    assert seen["pruned_teacher"] == seen["teacher_id"]
    manifest = json.loads((team["alice"] / "data" / "prepared" / "manifest.json").read_text())
    from prunekd.data import manifest_hash

    assert seen["kd_tags"]["data_manifest_md5"] == manifest_hash(manifest)
    assert seen["kd_inputs"] == [["digits", manifest_hash(manifest)]]
    assert len(seen["kd_tags"]["git_commit"]) >= 40
    # One sweep: the report run is the parent of every run behind the report.
    assert seen["kd_tags"]["mlflow.parentRunId"] in seen["report_ids"]


def test_registered_model_by_alias_reproduces_its_logged_accuracy(team, second_client):
    seen = second_client
    results = pd.read_csv(team["alice"] / "reports" / "results.csv")
    retrained = results[results["mode"] != "teacher"]
    assert seen["best_run_stage"] == "retrain"
    assert seen["best_run_top1"] == pytest.approx(retrained["top1"].max())
    assert seen["own_run_id"] == seen["best_run"]
    assert seen["own_top1"] == pytest.approx(seen["best_run_top1"], abs=1e-9)
    # The torch.export program may differ from eager PyTorch in the last float bits.
    assert seen["exported_top1"] == pytest.approx(seen["best_run_top1"], abs=0.05)
    assert {"teacher", "best", "best-ft", "best-kd"} <= set(seen["aliases"])
    assert any(a.endswith("pct-smaller") for a in seen["aliases"])


def test_runs_command_prints_the_sweep_from_the_server(team):
    env = clean_env(MLFLOW_TRACKING_URI=team["uri"])
    proc = subprocess.run([str(BIN / "prunekd"), "runs", "--each"], capture_output=True, text=True, env=env,
                          cwd=team["base"])
    assert proc.returncode == 0, proc.stderr
    results = pd.read_csv(team["alice"] / "reports" / "results.csv")
    for _, row in results[results["mode"] != "teacher"].iterrows():
        line = next(l for l in proc.stdout.splitlines() if f"| {row['mode']} " in l and f" {row['ratio']:.2f} " in l)
        assert f"{row['top1']:.2f}" in line
    summary = subprocess.run([str(BIN / "prunekd"), "runs"], capture_output=True, text=True, env=env,
                             cwd=team["base"])
    assert summary.returncode == 0 and "2 retrain runs" in summary.stdout, summary.stderr
    # each architecture's latency, read from its prune run, as the latency stage measured it
    latency = pd.read_csv(team["alice"] / "reports" / "latency.csv")
    headline = latency[(latency["runtime"] == "onnxruntime") & (latency["batch"] == 1) & (latency["ratio"] == 0.3)]
    row = next(l for l in summary.stdout.splitlines() if l.startswith("|    0.30 | ft"))
    assert "ms onnxruntime b1" in summary.stdout and f"{headline['median_ms'].iloc[0]:.2f}" in row


def test_teammate_pulls_everything_and_reproduces_nothing(team, tmp_path):
    bob = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(team["alice"]), str(bob))
    dvc(bob, "remote", "modify", "--local", "team", "url", str(team["base"] / "remote"))
    dvc(bob, "pull")
    assert "up to date" in dvc(bob, "status")
    assert ran(dvc(bob, "repro")) == set()
    shown = [json.loads(dvc(repo, "metrics", "show", "--json")) for repo in (team["alice"], bob)]
    assert shown[0] == shown[1] and shown[0]
    for name in ("reports/results.csv", "models/teacher/model.pt", "models/retrained/0.3-kd-0/model.pt"):
        assert (bob / name).read_bytes() == (team["alice"] / name).read_bytes(), name


def test_unreachable_tracking_server_fails_fast_before_training(tmp_path):
    repo = copy_repo(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "prunekd"), "teacher"], cwd=repo, capture_output=True, text=True,
                          env=clean_env(MLFLOW_TRACKING_URI=uri))
    took = time.monotonic() - start
    assert proc.returncode == 2
    assert uri in proc.stderr and "unreachable" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (repo / "models").exists()
    assert took < 30, f"took {took:.0f} s to fail"


class BrokenServer(BaseHTTPRequestHandler):
    """A reverse proxy whose backend is down (502 to everything), or, with ``hang``, a server whose
    health check answers but whose API never does, or, with ``hang`` "json", one that answers
    every call with JSON that is not MLflow's."""

    hang = False

    def do_GET(self):
        if self.hang == "json":
            body = b'{"status": "ok", "items": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.hang and self.path.startswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        if self.hang:
            time.sleep(60)
        self.send_response(502)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("hang", [False, True, "json"], ids=["502", "api-hangs", "not-mlflow-json"])
def test_a_tracking_server_that_answers_with_errors_fails_fast_and_touches_nothing(tmp_path, hang):
    repo = copy_repo(tmp_path)
    (repo / "models/pruned/0.3").mkdir(parents=True)
    (repo / "models/pruned/0.3/model.pt").write_bytes(b"an earlier output")
    handler = type("Handler", (BrokenServer,), {"hang": hang})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        start = time.monotonic()
        proc = subprocess.run([str(BIN / "prunekd"), "prune", "--ratio", "0.3"], cwd=repo, capture_output=True,
                              text=True, env=clean_env(MLFLOW_TRACKING_URI=uri), timeout=120)
        took = time.monotonic() - start
    finally:
        httpd.shutdown()
    assert proc.returncode == 2 and uri in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (repo / "models/pruned/0.3/model.pt").read_bytes() == b"an earlier output"
    assert took < 30, f"took {took:.0f} s to fail"


def test_rerun_report_registers_no_duplicate_versions(team):
    def versions():
        code = ("from mlflow.tracking import MlflowClient; c = MlflowClient(); "
                f"print(sorted((v.run_id, v.version) for v in c.search_model_versions(\"name = '{MODEL}'\")))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=clean_env(MLFLOW_TRACKING_URI=team["uri"]))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    before = versions()
    assert ran(dvc(team["alice"], "repro", "--force", "--single-item", "report", env={"MLFLOW_TRACKING_URI": team["uri"]})) == {"report"}
    assert versions() == before and before.count("'") == 4 * 3  # three versions (teacher + 2), each with its run id


class WriteRefusingProxy(BaseHTTPRequestHandler):
    """A real MLflow server behind a proxy that passes every read and refuses the writes whose path
    holds ``refuse`` (every POST and PUT where it is ""): a server whose reads work but writes fail."""

    backend = ""
    refuse = ""

    def _forward(self):
        if self.command != "GET" and self.refuse in self.path:
            self.send_response(503)
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command != "GET" else None
        request = urllib.request.Request(self.backend + self.path, data=body, method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, payload, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A repo after one `prunekd prepare` against its own store: the previous outputs (and a store
    with the experiment) that each fault below must leave as they are. Each test works on a copy."""
    repo = copy_repo(tmp_path_factory.mktemp("prepared"))
    set_params(repo, digits_sweep_params)
    first = subprocess.run([str(BIN / "prunekd"), "prepare"], cwd=repo, capture_output=True, text=True,
                           env=clean_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    return repo


def prepare_again(prepared: Path, dest: Path, env: dict[str, str], between=lambda repo: None
                  ) -> tuple[subprocess.CompletedProcess, float, dict, dict]:
    """In a copy of the ``prepared`` repo, ``between(copy)``, then `prunekd prepare` again with
    ``env``: its result, how long it took, and the prepared data's bytes before and after it."""
    repo = Path(shutil.copytree(prepared, dest, symlinks=True))
    # the copy's store points at its own artifacts from the start (what a stage in a copied project
    # does, with a line on stderr, tested on its own): the fault is the only news here
    with contextlib.closing(sqlite3.connect(repo / "mlflow.db")) as db:
        [location] = db.execute("select artifact_location from experiments where name = 'prunekd'").fetchone()
    with contextlib.redirect_stderr(io.StringIO()):
        assert follow_project(repo, repo / "mlflow.db", location)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data").rglob("*")) if p.is_file()}

    between(repo)
    before, start = files(), time.monotonic()
    proc = subprocess.run([str(BIN / "prunekd"), "prepare"], cwd=repo, capture_output=True, text=True,
                          env=clean_env(**env), timeout=120)
    return proc, time.monotonic() - start, before, files()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    base = tmp_path_factory.mktemp("backend")
    with server(f"sqlite:///{base / 'server.db'}", base / "artifacts") as uri:
        yield uri


# every write, or only the artifact uploads (the manifest, logged inside the stage's output block)
@pytest.mark.parametrize("refuse", ["", "/mlflow-artifacts/"], ids=["every-write", "mid-run"])
def test_a_server_whose_writes_fail_gives_one_line_and_keeps_the_previous_outputs(tmp_path, prepared, backend,
                                                                                   refuse):
    handler = type("Handler", (WriteRefusingProxy,), {"backend": backend, "refuse": refuse})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        proc, took, before, after = prepare_again(prepared, tmp_path / "repo", {"MLFLOW_TRACKING_URI": uri})
    finally:
        httpd.shutdown()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and f"MLflow tracking store {uri}: " in proc.stderr
    assert after == before and took < 30, f"took {took:.0f} s"


def test_an_experiment_deleted_in_the_ui_gives_one_line_and_keeps_the_previous_outputs(tmp_path, prepared):
    from mlflow.tracking import MlflowClient

    def delete(repo):  # the first run made the experiment; delete it as the UI does
        client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
        client.delete_experiment(client.get_experiment_by_name("prunekd").experiment_id)

    proc, _, before, after = prepare_again(prepared, tmp_path / "repo", {}, delete)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "experiment 'prunekd' is deleted; restore it" in proc.stderr and after == before


def test_a_locked_store_gives_one_line_within_the_bound_and_keeps_the_previous_outputs(tmp_path, prepared):
    holder = []

    def lock(repo):  # another process writing for minutes: the store stays locked
        db = sqlite3.connect(repo / "mlflow.db", isolation_level=None)
        db.execute("begin exclusive")
        holder.append(db)

    try:
        proc, took, before, after = prepare_again(prepared, tmp_path / "repo", {}, lock)
    finally:
        for db in holder:
            db.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "MLflow tracking store sqlite:///" in proc.stderr
    assert "locked by another process" in proc.stderr and after == before and took < 30, f"took {took:.0f} s"


def test_a_database_store_without_its_driver_gives_one_line(tmp_path, prepared):
    uri = "mssql+pyodbc://user:secret@127.0.0.1:1/prunekd"  # no pyodbc here, nor a server
    proc, took, before, after = prepare_again(prepared, tmp_path / "repo", {"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "MLflow tracking store mssql+pyodbc://" in proc.stderr
    assert after == before and took < 30


def test_a_server_never_hands_out_a_port_another_server_took(tmp_path, monkeypatch):
    """Two servers started at once (two flows, two test workers) may be given the same free port:
    the one that loses the bind must not yield the winner's URI, and so log into the wrong store."""
    from mlflow.tracking import MlflowClient

    from prunekd.tracking import connection

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with server(f"sqlite:///{tmp_path / 'a/mlflow.db'}", tmp_path / "a/artifacts") as first:
        MlflowClient(first).create_experiment("in-a")
        ports = iter([int(first.rsplit(":", 1)[1])])  # the first port offered is the one just taken
        monkeypatch.setattr(connection, "free_port", lambda: next(ports, None) or free_port())
        with server(f"sqlite:///{tmp_path / 'b/mlflow.db'}", tmp_path / "b/artifacts", timeout=60) as second:
            assert second != first
            names = {e.name for e in MlflowClient(second).search_experiments()}
    assert "in-a" not in names  # the store behind the URI is b's own


def test_the_servers_log_goes_to_a_file_it_can_never_fill_and_a_failed_start_shows_it(tmp_path):
    """A pipe that nobody reads while the block runs blocks the server once it holds 64 KiB of log,
    and every stage logging through it with it: the server's stderr is a file. A server that exits
    at start says why, from that file."""
    import psutil

    from prunekd.tracking import TrackingError

    with server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts") as uri:
        port = int(uri.rsplit(":", 1)[1])
        listening = [p for p in psutil.process_iter()
                     if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                            for c in _connections(p))]
        assert listening
        for proc in listening:
            assert not Path(f"/proc/{proc.pid}/fd/2").readlink().as_posix().startswith("pipe:")
    with pytest.raises(TrackingError, match=r"mlflow server exited with \d+: .*\S"):
        with server("nosuchscheme://store", tmp_path / "artifacts2", port=free_port(), timeout=60):
            pass


def _connections(proc) -> list:
    import psutil

    try:
        return proc.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
