"""The scripts' command lines: a bad argument gets one line naming it, exit 2, no traceback, and
nothing written."""

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..conftest import ROOT, clean_env, load_script


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess, script: str) -> str:
    """The one line a script refused its arguments in (exit 2, no traceback)."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"{script}.py: error: "), line
    return line


@pytest.mark.parametrize("args, says", [
    (["headroom-75", "headroom-75:ft"], "'headroom-75': expected RUN:MODE"),
    (["/tmp:kd", "headroom-75:ft"], "'/tmp:kd': expected RUN:MODE"),
    (["no-such-run:kd", "headroom-75:ft"], "no 0.75-kd-<seed>.npy in docs/runs/no-such-run/correct"),
    (["headroom-75:k*", "headroom-75:ft"], "'headroom-75:k*': expected RUN:MODE"),  # no glob pattern
])
def test_pair_runs_refuses_what_it_cannot_pair(tmp_path, args, says):
    assert says in refused(run_script("pair_runs", *args, cwd=tmp_path), "pair_runs")


@pytest.mark.parametrize("args, says", [
    (["no-such-run"], "docs/runs/no-such-run/report.md not found: 'no-such-run' is no published run"),
    ([], "usage: python scripts/rerender_answer.py"),
])
def test_rerender_answer_refuses_a_run_that_is_not_published(tmp_path, args, says):
    assert says in refused(run_script("rerender_answer", *args, cwd=tmp_path), "rerender_answer")
    assert not (ROOT / "docs" / "runs" / "no-such-run").exists()


@pytest.mark.parametrize("script, args, says", [
    ("compare_runs", ["no-such-comparison", "no-such-run", "headroom-75"], "docs/runs/no-such-run/results.csv not found"),
    ("compare_budgets", ["no-such-comparison"], "usage: python scripts/compare_budgets.py"),
    ("compare_controls", ["no-such-comparison", "headroom-26", "--curve"], "--curve needs the param"),
    ("compare_latency_plans", ["no-such-comparison", "no-such-run", "lat-depth"], "docs/runs/no-such-run/"),
])
def test_the_comparisons_refuse_runs_they_cannot_compare(tmp_path, script, args, says):
    assert says in refused(run_script(script, *args, cwd=tmp_path), script)
    assert not (ROOT / "docs" / "runs" / args[0]).exists()


def test_publish_run_refuses_a_command_line_without_a_name_and_a_command(tmp_path):
    assert "usage: python scripts/publish_run.py" in refused(run_script("publish_run", "name-only", cwd=tmp_path),
                                                              "publish_run")


@pytest.mark.parametrize("store, says", [("missing.db", "missing.db not found"),
                                         ("notes.txt", "notes.txt: not a usable SQLite MLflow store")])
def test_mlflow_screenshot_refuses_a_store_it_cannot_read_before_any_picture(tmp_path, store, says):
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    proc = run_script("mlflow_screenshot", "--store", str(tmp_path / store), "--out", str(tmp_path / "img"),
                      cwd=tmp_path)
    line = refused(proc, "mlflow_screenshot")
    assert says in line or "no Chromium found" in line  # a machine without the browser stops before the store
    assert not (tmp_path / "img").exists()


def test_screenshots_that_fail_their_check_leave_the_published_ones_as_they_were(tmp_path, monkeypatch):
    """The pictures are taken into a temporary folder, and only pictures that pass the check replace
    docs/img's. Here the browser's pages show nothing of the run: the check fails."""
    from mlflow.tracking import MlflowClient

    script = load_script("mlflow_screenshot")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a real store with a finished report run
    run = client.create_run(client.create_experiment(script.EXPERIMENT), tags={"prunekd.stage": "report"})
    client.log_metric(run.info.run_id, "teacher_top1", 91.5)
    client.set_terminated(run.info.run_id)

    def blank_page(url, png, tries=2, budget_ms=0):  # what Chromium gives of a page that never drew
        png.write_bytes(b"a blank page")
        return "<html><body></body></html>"

    @contextmanager
    def no_server(store_uri, artifacts):
        yield "http://prunekd.localhost:1"

    monkeypatch.setattr(script, "browser", lambda: "chromium")
    monkeypatch.setattr(script, "chromium", blank_page)
    monkeypatch.setattr(script, "ui_server", no_server)
    out = tmp_path / "img"
    out.mkdir()
    for name in (script.RUNS_PNG, script.RUN_PNG, script.COMPARE_PNG):
        (out / name).write_bytes(b"the published picture")
    with pytest.raises(script.ScreenshotError, match="does not name the experiment"):
        script.screenshots(tmp_path / "mlflow.db", out, fill=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        name: b"the published picture" for name in (script.RUNS_PNG, script.RUN_PNG, script.COMPARE_PNG)}
    shots = script.screenshots(tmp_path / "mlflow.db", out, fill=False, verify=False)  # unchecked: moved in
    assert shots.runs_png == out / script.RUNS_PNG and shots.runs_png.read_bytes() == b"a blank page"
    assert sorted(p.name for p in out.iterdir()) == sorted((script.RUNS_PNG, script.RUN_PNG, script.COMPARE_PNG))
