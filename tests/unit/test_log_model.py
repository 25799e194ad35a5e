"""A stage's logged model, through a real MLflow SQLite store: MLflow checks its input example by
loading it back, and that copy draws no progress bar in the stage's log (tracking/run.py,
no_progress_bars)."""

import json
import os

import mlflow
import pytest

from prunekd import tracking
from prunekd.config import load_params
from prunekd.export import export_onnx
from prunekd.models import build_model, save_model
from prunekd.tracking.run import PROGRESS_BAR_ENV

from ..conftest import ROOT


@pytest.mark.parametrize("before", [None, "true"])
def test_a_logged_model_draws_no_progress_bar_and_the_setting_is_put_back(tmp_path, monkeypatch, capfd, before):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    if before is None:
        monkeypatch.delenv(PROGRESS_BAR_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_BAR_ENV, before)
    monkeypatch.chdir(tmp_path)
    model = build_model("lenet5", 10, (1, 8, 8))
    model_file = save_model(model, tmp_path / "model.pt")
    onnx_file = export_onnx(model, tmp_path / "model.onnx", model_file)
    (tmp_path / "lineage.json").write_text(json.dumps({}))
    capfd.readouterr()
    with tracking.stage_run("retrain@0.5-kd-0", load_params(ROOT / "params.yaml")) as run:
        run.log_model(model, model_file, onnx_file, tmp_path / "lineage.json", {"test_top1": 50.0})
    err = capfd.readouterr().err
    assert "Downloading artifacts" not in err and "%|" not in err, err
    assert os.environ.get(PROGRESS_BAR_ENV) == before
    logged = mlflow.get_run(run.run_id).data.tags
    # the model was logged with its input example, the example MLflow checked
    folder = mlflow.artifacts.download_artifacts(logged["prunekd.model_uri"], dst_path=str(tmp_path / "got"))
    assert os.path.isfile(os.path.join(folder, "serving_input_example.json"))
