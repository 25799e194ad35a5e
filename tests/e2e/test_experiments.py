"""DVC experiments the way DVC and Prefect users start them: `dvc exp run --queue` + `dvc queue
start`, and a served Prefect deployment run with param overrides through a real `prefect server`.
Both run in temporary copies of the repo, and must still log into the project's MLflow store."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from prunekd.tracking import free_port

from ..conftest import BIN, ROOT, clean_env, dvc, runs

MODEL = "prunekd-digits-alexnet"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def repo(alexnet_repro) -> Path:
    """The session's AlexNet digits repo (one ratio x {ft, kd}, test_archs'), reproduced, and here
    committed: the baseline the experiments change."""
    repo = alexnet_repro.repo
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    return repo


def experiments(repo: Path) -> dict[str, dict]:
    """Experiment name -> its flat metrics, from `dvc exp show --json`."""
    proc = subprocess.run([str(BIN / "dvc"), "exp", "show", "--json"], cwd=repo, env=clean_env(),
                          capture_output=True, text=True)
    shown = json.loads(proc.stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                metrics = (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data", {})
                found[rev.get("name") or exp.get("name")] = metrics
    return found


def logged_in(repo: Path, experiment: str) -> dict[str, object]:
    """The project's MLflow runs tagged with a DVC experiment, by stage."""
    return {r.data.tags["dvc_stage"]: r for r in runs(repo) if r.data.tags.get("dvc_exp") == experiment}


def test_a_queued_experiment_logs_into_the_projects_store(repo):
    before = (repo / "params.yaml").read_text()
    dvc(repo, "exp", "run", "--queue", "--name", "queued-t2", "-S", "kd.temperature=2")
    dvc(repo, "queue", "start")
    proc = subprocess.run([str(BIN / "dvc"), "queue", "logs", "--follow", "queued-t2"], cwd=repo,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert "queued-t2" in experiments(repo), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (repo / "params.yaml").read_text() == before
    logged = logged_in(repo, "queued-t2")
    assert set(logged) == {"retrain@0.3-kd-0", "quantize@0.3-kd-0", "report"}  # only what the change reruns
    kd = logged["retrain@0.3-kd-0"]
    assert kd.data.params["kd.temperature"] == "2.0"
    # Lineage into the workspace's runs, although the copy had no lineage.json: found by the md5 tag.
    workspace = {r.data.tags["dvc_stage"]: r.info.run_id for r in runs(repo) if "dvc_exp" not in r.data.tags}
    assert kd.data.tags["teacher_run_id"] == workspace["teacher"]
    assert kd.data.tags["prune_run_id"] == workspace["prune@0.3"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    children = client.search_runs([kd.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{logged['report'].info.run_id}'")
    assert {r.data.tags["dvc_stage"] for r in children} >= {"teacher", "prune@0.3", "retrain@0.3-ft-0",
                                                            "retrain@0.3-kd-0"}
    # Registered as candidates: versions tagged with the experiment, aliases left with the workspace.
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert kd.info.run_id in {v.run_id for v in versions if v.tags.get("dvc_exp") == "queued-t2"}
    best = client.get_model_version_by_alias(MODEL, "best")
    assert best.run_id in workspace.values()


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(1)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1, with its own database."""
    home, port = tmp_path_factory.mktemp("prefect"), free_port()
    env = clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", 120)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def task_runs(api_url: str, flow_run_name: str) -> dict[str, str]:
    """The task runs of the flow run named ``flow_run_name``, from Prefect's REST API: name -> state."""
    [run] = api(f"{api_url}/flow_runs/filter", {"flow_runs": {"name": {"any_": [flow_run_name]}}})
    tasks = api(f"{api_url}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    return {t["name"]: t["state"]["name"] for t in tasks}


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_a_deployment_run_with_overrides_is_a_dvc_experiment(repo, prefect_server):
    env = prefect_server
    before = (repo / "params.yaml").read_text()
    serve = subprocess.Popen([sys.executable, str(ROOT / "flows" / "experiment.py"), "serve", "--root", str(repo),
                              "--name", "study"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for(f"{env['PREFECT_API_URL']}/deployments/name/prunekd-experiment/study", 120)
        proc = subprocess.run([str(BIN / "prefect"), "deployment", "run", "prunekd-experiment/study",
                               "--param", 'overrides=["kd.alpha=0.5"]', "--flow-run-name", "alpha-half",
                               "--watch", "--watch-timeout", "600"],
                              env=env, capture_output=True, text=True, timeout=660)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Completed" in proc.stdout
    [name] = [n for n in experiments(repo) if n.startswith("prefect-alpha-half-")]  # then the run id's 8 hex digits
    assert (repo / "params.yaml").read_text() == before  # the workspace is left as it was
    logged = logged_in(repo, name)
    assert logged["retrain@0.3-kd-0"].data.params["kd.alpha"] == "0.5"
    assert len({r.data.tags.get("prefect_flow_run_id") for r in logged.values()}) == 1
    # each stage its own task run, as in a run without overrides: the stale ones ran, the rest were
    # checked and found up to date
    tasks = task_runs(env["PREFECT_API_URL"], "alpha-half")
    ran_ = {name for name, state in tasks.items() if state == "Completed"}
    assert ran_ == {"check", "retrain@0.3-kd-0", "quantize@0.3-kd-0", "report"}, tasks
    assert set(tasks.values()) == {"Completed", "Cached"} and set(logged) == ran_ - {"check"}
    # the experiment's worktree is gone, its outputs in the shared cache: `dvc exp apply` brings them back
    assert not any((repo / ".prunekd" / "experiments").glob("*"))
    assert git_out(repo, "worktree", "list").count("\n") == 1
