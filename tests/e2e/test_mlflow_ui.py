"""End to end: MLflow's UI, in a real headless Chromium against a real `mlflow server`, on the store
of a real pipeline run (the session's `tiny_repro`: LeNet-5 on digits, two ratios x {ft, kd}).
The experiment's runs table and the report run's page open on the answer, in the model-training
view, the comparison view the report stage saves on its chart, and scripts/mlflow_screenshot.py
takes their pictures."""

import hashlib
import json
import struct
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ..conftest import load_script

RATIOS = (30, 60)  # digits_sweep_params's ratios, as params removed %


@pytest.fixture(scope="module")
def script():
    module = load_script("mlflow_screenshot")
    try:
        module.browser()
    except module.ScreenshotError as exc:  # setup.sh installs it: a missing browser fails, it does not skip
        pytest.fail(f"MLflow's UI cannot be checked in a browser: {exc}")
    return module


@pytest.fixture(scope="module")
def store(tiny_repro) -> Path:
    """The session repo's store as its first repro left it; only read here (the script works on a copy)."""
    return tiny_repro.store


def latest_report(store: Path):
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("prunekd")
    [report] = client.search_runs([experiment.experiment_id], "tags.`prunekd.stage` = 'report'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return experiment, report


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_pipeline_logs_what_the_ui_opens_on(store):
    experiment, report = latest_report(store)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert report.data.tags["mlflow.note.content"].startswith("## The answer")
    # the comparison view, saved on the experiment and linked from the report run's description
    view = json.loads(experiment.tags["mlflow.sharedViewState.prunekd-compare"])
    [chart] = view["compareRunCharts"]
    assert (chart["xaxis"]["key"], chart["yaxis"]["key"]) == ("params", "test_top1")
    assert [k["groupByData"] for k in view["groupBy"]["groupByKeys"]] == ["mode", "ratio"]
    link = f"(#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning" \
           "&viewStateShareKey=prunekd-compare&compareRunsMode=CHART)"
    assert link in report.data.tags["mlflow.note.content"]
    assert {"teacher_top1", *(f"{k}_{r}" for r in RATIOS for k in ("top1_ft", "top1_kd", "kd_minus_ft"))} \
        <= report.data.metrics.keys()


def test_the_screenshots_show_the_answer_in_the_model_training_view(script, store, tmp_path):
    before = hashlib.md5(store.read_bytes()).hexdigest()
    shots = script.screenshots(store, tmp_path, fill=False)  # fails unless the pages pass script.check
    experiment, report = latest_report(store)
    assert shots.filled_in == () and shots.run_id == report.info.run_id
    # both pictures: the browser window, not a blank page
    for png in (shots.runs_png, shots.run_png, shots.compare_png):
        assert png.parent == tmp_path and png_size(png) == tuple(map(int, script.WINDOW.split(",")))
        assert png.stat().st_size > 20_000, f"{png.name}: {png.stat().st_size} bytes, a blank page?"
    # the model-training view (its sidebar has the model registry, the GenAI one judges), on this
    # project's experiment
    for text in (shots.runs_text, shots.run_text, shots.compare_text):
        assert "Model registry" in text and experiment.name in text
        assert not {"Judges", "Evaluations"} & set(text.split())
    # the runs table: the report run is the first row, with the answer's metrics as columns
    assert script.first_run_name(shots.runs_text) == "report"
    values = [report.data.metrics[k] for k in shots.columns]
    assert list(shots.columns) == ["teacher_top1", *(f"{k}_{r}" for r in RATIOS
                                                     for k in ("top1_ft", "top1_kd", "kd_minus_ft"))]
    assert " ".join(map(script.js_number, values)) in shots.runs_text
    # the run page: the answer as the report stage wrote it into the run's description (its heading,
    # the first row of its table, each ratio's line)
    shown = script.answer_lines(report.data.tags["mlflow.note.content"])
    assert shown[0] == "The answer: what retraining and distillation add to the pruned network"
    assert len(shown) >= 2 + len(RATIOS) and all(line in shots.run_text for line in shown)
    assert hashlib.md5(store.read_bytes()).hexdigest() == before  # the store itself is left alone
    # the comparison view: the retrain runs in groups of mode and ratio, on test top-1 against params
    assert script.compare_problems(shots.compare_text) == []
