"""Every stage run in-process on tiny data (LeNet-5 on scikit-learn's digits), in a temporary
project folder given by its ``Layout``: what each stage writes, and that it writes nowhere else.

The end-to-end tests (tests/e2e) run the same stages through `dvc repro` and the Prefect flow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from prunekd import data
from prunekd.config import Params, load_params
from prunekd.data import load_digits_dataset, split_train_val
from prunekd.io import stage_outputs
from prunekd.models import ModelFileError, build_model, load_model, read_meta, save_model
from prunekd.paths import INT8_LINEAGE_FILE, INT8_OUTPUTS, LINEAGE_FILE, MODEL_OUTPUTS, Layout
from prunekd.tracking import free_port
from prunekd.stages import (check, latency, latency_table, prepare, prune, quantize, quantize_teacher, report,
                            retrain, sensitivity, teacher)
from prunekd.stages.artifacts import load_pruned, model_folder, save_outputs

from ..conftest import ROOT, digits_params

RATIO = 0.3
MODES = ["ft", "kd"]


@dataclass
class Project:
    layout: Layout
    params: Params
    uri: str
    results: dict[str, object]  # each stage's return value
    reads: list[tuple[str, dict, set[str]]] = field(default_factory=list)  # (dvc.yaml stage, its item, the
    # project files it opened to read)

    def runs(self) -> list:
        client = MlflowClient(self.uri)
        return client.search_runs([client.get_experiment_by_name("prunekd").experiment_id], max_results=100)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """Every stage once, in DAG order, in a fresh folder; the working directory is another empty
    folder, so a path taken relative to it instead of from the layout shows up there."""
    root, elsewhere = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("cwd")
    raw = digits_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["teacher"].update(epochs=10, lr=0.1)  # enough to learn: the retrain tests compare to it
    raw["retrain"].update(modes=MODES, seeds=[0])
    raw["prune"].update(ratios=[RATIO], sensitivity_ratios=[0.25, 0.5], bn_recalibration_batches=2)
    raw["measure"].update(batch_sizes=[1], runtimes=["onnxruntime"], rounds=2)
    layout = Layout(root)
    layout.params.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(layout.params)
    uri = f"sqlite:///{root / 'store.db'}"
    reads = []
    item = {"ratio": RATIO, "seed": 0}
    stages = [("check", "check", {}, lambda: check.run(params, layout)),
              ("prepare", "prepare", {}, lambda: prepare.run(params, layout)),
              ("teacher", "teacher", {}, lambda: teacher.run(params, layout)),
              ("sensitivity", "sensitivity", {}, lambda: sensitivity.run(params, layout)),
              ("latency_table", "latency_table", {}, lambda: latency_table.run(params, layout)),
              ("prune", "prune", item, lambda: prune.run(params, layout, RATIO)),
              *((f"retrain-{m}", "retrain", item | {"mode": m}, lambda m=m: retrain.run(params, layout, RATIO, m, 0))
                for m in MODES),
              ("quantize-teacher", "quantize_teacher", {}, lambda: quantize_teacher.run(params, layout)),
              *((f"quantize-{m}", "quantize", item | {"mode": m}, lambda m=m: quantize.run(params, layout, RATIO, m, 0))
                for m in MODES),
              ("latency", "latency", {}, lambda: latency.run(params, layout)),
              ("report", "report", {}, lambda: report.run(params, layout))]
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # seconds-long runs get samples too
        mp.chdir(elsewhere)
        for key, stage, stage_item, run in stages:
            with recording_reads(root) as opened:
                results[key] = run()
            reads.append((stage, stage_item, opened))
        assert list(elsewhere.iterdir()) == []  # nothing written relative to the working directory
    return Project(layout, params, uri, results, reads)


_RECORDING: list[tuple[Path, set[str]]] = []  # (project root, files opened to read), while a stage runs
_HOOKED: list = []  # the audit hook, once added


def _on_open(event: str, args: tuple) -> None:
    """An audit hook: each project file a recorded stage opens for reading, relative to the project,
    except those in its own scratch folders (``.<output>.tmp``, prunekd.io's) and folders opened to
    be synced."""
    if event != "open" or not _RECORDING or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path, mode, flags = args
    writes = any(c in (mode or "") for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
    root, opened = _RECORDING[-1]
    path = Path(os.path.realpath(os.fsdecode(path)))
    if writes or not path.is_relative_to(root) or path.is_dir():
        return
    parts = path.relative_to(root).parts
    if not any(part.startswith(".") and part.endswith(".tmp") for part in parts):
        opened.add("/".join(parts))


@contextlib.contextmanager
def recording_reads(root: Path):
    """The project files (relative paths) opened for reading in Python while the block runs (what
    native code opens itself, ONNX Runtime's and SQLite's files, is not seen)."""
    if not _HOOKED:
        sys.addaudithook(_on_open)  # for the life of the process: an audit hook cannot be removed
        _HOOKED.append(_on_open)
    opened: set[str] = set()
    _RECORDING.append((root.resolve(), opened))
    try:
        yield opened
    finally:
        _RECORDING.pop()



def model_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# MLflow run ids beside a model, read only by tracking (to link a run to its parents'): no output depends on them
LINEAGE_FILES = {LINEAGE_FILE, INT8_LINEAGE_FILE}


def test_every_file_a_stage_reads_is_a_dep_of_it_in_dvc_yaml(project):
    """What a stage opens to read in the project is among its dvc.yaml deps (or its own outputs, or
    params.yaml): else DVC could skip rerunning it, or the flow run it before the stage that makes it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, item, opened in project.reads:
        declared = ["params.yaml"]
        for entry in stages[stage].get("deps", []) + stages[stage].get("outs", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            for key, value in item.items():
                path = path.replace(f"${{item.{key}}}", str(value))
            declared.append(path)
        undeclared = sorted(f for f in opened if Path(f).name not in LINEAGE_FILES
                            and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in declared))
        assert not undeclared, f"{stage} reads {undeclared}, which its dvc.yaml deps do not name"
    # the hook sees what a stage reads (else the check above passes on nothing)
    assert any(stage == "report" and "models/teacher/int8.json" in opened for stage, _, opened in project.reads)


def test_check_counts_every_key_and_leaves_the_same_gate_file(project):
    assert project.results["check"] > 40
    assert json.loads(project.layout.checked.read_text()) == {"params": "valid"}  # what every stage depends on


def test_check_logs_nothing_so_it_needs_no_tracking_store_and_imports_neither_mlflow_nor_torch(tmp_path):
    # every params edit runs it first: importing MLflow and PyTorch was nearly all of its time
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    script = ("import sys\nfrom prunekd.stages import check\ncode = check.main([])\n"
              "print(sorted({'mlflow', 'torch'} & sys.modules.keys()))\nsys.exit(code)")
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there; the next stage says so
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env=os.environ | {"MLFLOW_TRACKING_URI": unreachable})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "reports/check.json").read_text()) == {"params": "valid"}


def test_check_refuses_a_key_left_out_naming_the_default_it_would_silently_take(tmp_path, monkeypatch, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["prune"]["round_to"], params["retrain"]["seeds"], params["scratch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert check.main([]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("prunekd check: error: params.yaml: prune.round_to, "
                                                         "retrain.seeds, scratch: left out"), err
    assert "prune.round_to 1, retrain.seeds [0], scratch its defaults" in err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("arch, refused", [("lenet5", "lenet5's prunable layers head.1, head.3 have none"),
                                            ("mobilenet_v1", None)])
def test_check_tries_bn_scale_on_the_architecture_before_anything_trains(tmp_path, monkeypatch, capsys, arch,
                                                                           refused):
    params = digits_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["model"]["arch"] = arch
    params["prune"]["criterion"] = "bn_scale"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    code = check.main([])
    err = capsys.readouterr().err
    if refused:
        assert code == 2 and err.startswith("prunekd check: error: prune.criterion: bn_scale") and refused in err
        assert len(err.splitlines()) == 1 and not (tmp_path / "reports" / "check.json").exists()
    else:
        assert code == 0 and (tmp_path / "reports" / "check.json").is_file(), err


def test_prepare_writes_the_splits_and_their_manifest(project):
    prepared = data.load_prepared(project.layout.prepared)  # verifies each split against the manifest
    assert project.results["prepare"] == prepared.manifest["sizes"]
    assert prepared.manifest["dataset"] == "digits" and prepared.num_classes == 10


def test_teacher_writes_a_whole_model_folder_and_learns(project):
    folder = project.layout.teacher
    assert model_files(folder) == sorted(MODEL_OUTPUTS + INT8_OUTPUTS)  # and the quantize stage's beside them
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == project.results["teacher"]
    assert metrics["top1"] > 30  # ten classes: chance is 10 %
    history = pd.read_csv(folder / "history.csv")
    assert list(history["epoch"]) == list(range(1, project.params.teacher.epochs + 1))
    model, meta = load_model(folder / "model.pt")
    assert model.spec()["arch"] == "lenet5" and meta["dataset"] == "digits"


def test_sensitivity_has_a_row_per_layer_and_ratio(project):
    curves = pd.read_csv(project.layout.curves)
    model, _ = load_model(project.layout.teacher / "model.pt")
    layers = len(model.prunable())
    assert len(curves) == layers * (1 + len(project.params.prune.sensitivity_ratios))  # ratio 0 included
    assert project.results["sensitivity"] == {"rows": len(curves)}
    assert (project.layout.sensitivity / "sensitivity.png").is_file()


def test_the_latency_table_is_empty_under_another_unit(project):
    assert project.results["latency_table"] == {"operators": 0}
    assert project.layout.latency_table_rows.read_text().strip() == "operator,layers,widths,us"
    assert json.loads(project.layout.latency_table_meta.read_text()) == {"unit": "params", "measured": False}


def test_prune_reaches_its_ratio_and_names_it_and_its_teacher(project):
    folder = project.layout.pruned(RATIO)
    assert folder.name == "0.3" and model_files(folder) == sorted(set(MODEL_OUTPUTS) - {"history.csv"})
    metrics = project.results["prune"]
    assert metrics["reduction"] == pytest.approx(RATIO, abs=0.01)
    assert metrics["params_after"] < metrics["params_before"]
    model, meta = load_pruned(project.layout, RATIO, data.load_prepared(project.layout.prepared))  # ratio, teacher
    assert meta["ratio"] == "0.3"
    assert sum(model.channels()) < sum(build_model("lenet5", 10, (1, 8, 8), 0.25).channels())


def test_a_pruned_model_of_another_ratio_is_refused(project):
    layout = project.layout
    shutil.copytree(layout.pruned(RATIO), layout.pruned(0.5))  # the 0.3 model, placed as 0.5's
    try:
        with pytest.raises(ModelFileError, match="pruned at ratio 0.3, not 0.5; rerun prune@0.5"):
            load_pruned(layout, 0.5, data.load_prepared(layout.prepared))
    finally:
        shutil.rmtree(layout.pruned(0.5))


@pytest.mark.parametrize("mode", MODES)
def test_retrain_keeps_the_pruned_shape_and_records_its_lineage(project, mode):
    folder = project.layout.retrained(RATIO, mode, 0)
    assert folder.name == f"0.3-{mode}-0" and model_files(folder) == sorted(MODEL_OUTPUTS + INT8_OUTPUTS)
    pruned, _ = load_model(project.layout.pruned(RATIO) / "model.pt")
    model, _ = load_model(folder / "model.pt")
    assert model.channels() == pruned.channels()
    lineage = json.loads((folder / "lineage.json").read_text())
    assert set(lineage) == {"mlflow_run_id", "teacher_run_id", "prune_run_id"}
    predictions = np.load(folder / "predictions.npy")
    assert len(predictions) == project.results["prepare"]["test"]


def test_latency_times_the_teacher_and_each_ratio_in_fp32_and_int8(project):
    table = pd.read_csv(project.layout.latency)
    assert sorted(zip(table["ratio"], table["precision"])) == [(0.0, "fp32"), (0.0, "int8"), (RATIO, "fp32"),
                                                               (RATIO, "int8")]
    assert (table["median_ms"] > 0).all()
    assert not list(project.layout.reports.glob("*.onnx"))  # the int8 forms it timed are not left behind


def test_quantize_writes_the_int8_form_and_its_figures_beside_the_model(project):
    from prunekd.quantize import calibration_images, onnx_logits
    from prunekd.data import load_prepared

    for folder in (project.layout.teacher, project.layout.retrained(RATIO, "kd", 0)):
        figures = json.loads((folder / "int8.json").read_text())
        predicted = np.load(folder / "predictions.int8.npy")
        labels = load_prepared(project.layout.prepared).test.y.numpy()
        assert figures["top1_int8"] == pytest.approx(100 * (predicted == labels).mean())
        assert figures["int8_change"] == pytest.approx(figures["top1_int8"] - figures["top1_fp32_onnx"])
        assert figures["int8_agreement_pct"] > 80
        # the int8 form computes the fp32 form's function, to int8's resolution: logits within 5 % of their range
        images = calibration_images(load_prepared(project.layout.prepared), 64)
        fp32, int8 = onnx_logits(folder / "model.onnx", images), onnx_logits(folder / "model.int8.onnx", images)
        assert np.abs(int8 - fp32).max() < 0.05 * (fp32.max() - fp32.min())
        lineage = json.loads((folder / "lineage.int8.json").read_text())
        assert lineage["model_run_id"] == json.loads((folder / "lineage.json").read_text())["mlflow_run_id"]


def test_report_writes_its_outputs_and_registers_the_models(project):
    reports = project.layout.reports
    for name in ("results.csv", "summary.csv", "report.md", "metrics.json", "plots/accuracy.csv",
                 "figures/accuracy_vs_ratio.png", "figures/retraining_curves.png", "figures/kd_minus_ft.png"):
        assert (reports / name).is_file(), name
    results = pd.read_csv(reports / "results.csv")
    assert len(results) == 1 + len(MODES) and project.results["report"]["runs"] == len(MODES)
    assert not [p for p in reports.iterdir() if p.name.endswith(".tmp")]  # no scratch left behind
    stages = {run.data.tags["prunekd.stage"] for run in project.runs()}
    assert stages == {"prepare", "teacher", "sensitivity", "prune", "retrain", "quantize_teacher", "quantize",
                      "latency", "report"}
    assert read_meta(project.layout.teacher / "model.pt")["dataset"] == "digits"
    # the answer: each mode against no retraining, from the per-image predictions of both models
    flat = json.loads((reports / "metrics.json").read_text())
    key = f"{100 * RATIO:g}"
    pruned_top1 = json.loads((project.layout.pruned(RATIO) / "metrics.json").read_text())["top1"]
    assert flat[f"top1_none_{key}"] == pytest.approx(pruned_top1)
    assert flat[f"ft_minus_none_{key}"] == pytest.approx(results.loc[results["mode"] == "ft", "top1"].iloc[0]
                                                         - pruned_top1)
    assert flat[f"kd_minus_teacher_{key}"] == pytest.approx(flat[f"top1_kd_{key}"] - flat["teacher_top1"])
    text = (reports / "report.md").read_text()
    assert "FT − none: " in text and "over retraining seeds and the test set's images" in text
    # MLflow's UI opens the experiment on its runs, not on the GenAI overview
    experiment = MlflowClient(project.uri).get_experiment_by_name("prunekd")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_mlflow_shows_the_answer_links_the_lineage_and_the_reports_figures(project):
    client = MlflowClient(project.uri)
    by_stage = {run.data.tags["dvc_stage"]: run for run in project.runs()}
    report_run = by_stage["report"]
    # the report run opens on the answer, lists the answer's metrics, and its report.md finds its figures
    assert report_run.data.tags["mlflow.note.content"].startswith("## The answer")
    assert "kd_minus_ft_30" in report_run.data.metrics and "ft_minus_none_30" in report_run.data.metrics
    assert all(k.startswith("latency/") for k in report_run.data.metrics if "median_ms" in k)
    figures = {a.path for a in client.list_artifacts(report_run.info.run_id, "report/figures")}
    assert "report/figures/kd_minus_ft.png" in figures
    # the comparison view, saved on the experiment, one click from the report run's description
    view_tags = client.get_experiment(report_run.info.experiment_id).tags
    assert '"groupByData": "ratio"' in view_tags["mlflow.sharedViewState.prunekd-compare"]
    assert "viewStateShareKey=prunekd-compare&compareRunsMode=CHART)" in report_run.data.tags["mlflow.note.content"]
    # a retrain run's description links the runs it was made from
    kd = by_stage["retrain@0.3-kd-0"]
    note = kd.data.tags["mlflow.note.content"]
    view = "?workflowType=machine_learning)"  # the model-training view, as tracking.ui_url opens pages
    assert f"/runs/{kd.data.tags['teacher_run_id']}{view}" in note and f"/runs/{kd.data.tags['prune_run_id']}{view}" in note
    assert any(k.startswith("system/") for k in kd.data.metrics)  # CPU and memory while it trained
    # registry tags: seeds as whole numbers, the teacher's empty
    versions = client.search_model_versions("name = 'prunekd-digits-lenet5'")
    seeds = {v.tags["mode"]: v.tags["seed"] for v in versions}
    assert seeds["teacher"] == "" and seeds["kd"] == "0"


def test_the_int8_forms_are_registered_for_deploy_and_load_and_run(project):
    import mlflow
    import onnxruntime as ort

    client = MlflowClient(project.uri)
    versions = client.search_model_versions("name = 'prunekd-digits-lenet5-onnx'")
    int8 = {v.tags["mode"]: v for v in versions if v.tags["precision"] == "int8"}
    assert set(int8) == {"teacher", *MODES}
    kd = json.loads((project.layout.retrained(RATIO, "kd", 0) / "int8.json").read_text())
    assert int8["kd"].tags["test_top1"] == f"{kd['top1_int8']:.2f}"
    mlflow.set_tracking_uri(project.uri)
    loaded = mlflow.onnx.load_model(f"models:/prunekd-digits-lenet5-onnx/{int8['kd'].version}")
    assert any(node.op_type == "QuantizeLinear" for node in loaded.graph.node)
    session = ort.InferenceSession(loaded.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (3, 10)
    # each alias of the deploy registry names the form report.deploy_int8 chose for its model
    results = pd.read_csv(project.layout.reports / "results.csv")
    latency_table = pd.read_csv(project.layout.latency)
    from prunekd.report import deploy_int8

    chosen = deploy_int8(results, latency_table)
    teacher = client.get_model_version_by_alias("prunekd-digits-lenet5-onnx", "teacher")
    assert teacher.tags["precision"] == ("int8" if chosen[results["mode"] == "teacher"].iloc[0] else "fp32")


def test_a_calibration_count_beyond_the_training_split_is_refused_in_one_line(copied, capsys):
    raw = yaml.safe_load(copied.params.read_text())
    raw["quantize"]["calibration_images"] = 10**6
    copied.params.write_text(yaml.safe_dump(raw, sort_keys=False))
    folder = copied.retrained(RATIO, "kd", 0)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert quantize.main(["--ratio", "0.3", "--mode", "kd", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "quantize.calibration_images: 1000000 is more than the" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


# ---- outputs appear whole or not at all ---------------------------------------------------------

def test_stage_outputs_replace_the_old_ones_only_when_the_block_succeeds(tmp_path):
    old_file, old_dir = tmp_path / "table.csv", tmp_path / "figures"
    old_file.write_text("old")
    old_dir.mkdir()
    with pytest.raises(RuntimeError), stage_outputs(old_file, old_dir, root=tmp_path) as scratch:
        (scratch / "table.csv").write_text("half")
        raise RuntimeError("killed")
    # a failed block loses nothing: the old outputs as they were, no scratch left
    assert old_file.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["figures", "table.csv"]
    (old_dir / "stale.png").write_text("old")
    with stage_outputs(old_file, old_dir, root=tmp_path) as scratch:
        (scratch / "table.csv").write_text("new")
        (scratch / "figures").mkdir()
    assert old_file.read_text() == "new" and old_dir.is_dir() and not (old_dir / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "table.csv"]
    with stage_outputs(old_file, old_dir, root=tmp_path) as scratch:  # an output not made this time goes
        (scratch / "table.csv").write_text("newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_stop_signal_while_the_outputs_are_swapped_in_waits_for_the_swap(tmp_path, monkeypatch):
    import os
    import signal

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped

    real_replace = os.replace

    def replace_then_stop(src, dst):  # SIGTERM arrives between two outputs
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for name in ("model.pt", "metrics.json"):
            (tmp_path / name).write_text("old")
        monkeypatch.setattr(os, "replace", replace_then_stop)
        with pytest.raises(Stopped):  # delivered, once the swap is done
            with stage_outputs(tmp_path / "model.pt", tmp_path / "metrics.json", root=tmp_path) as scratch:
                for name in ("model.pt", "metrics.json"):
                    (scratch / name).write_text("new")
        monkeypatch.undo()
        assert [(tmp_path / name).read_text() for name in ("model.pt", "metrics.json")] == ["new", "new"]
        assert signal.getsignal(signal.SIGTERM) is stop  # the stage's own handler back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_output_folder_linked_out_of_the_project_is_refused_and_its_target_untouched(tmp_path):
    from prunekd.io import OutsideProjectError

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (elsewhere / "teacher").mkdir(parents=True)
    (elsewhere / "teacher" / "model.pt").write_text("someone else's")
    project.mkdir()
    (project / "models").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutsideProjectError, match="outside the project"):
        with model_folder(project / "models" / "teacher", project) as scratch:
            (scratch / "model.pt").write_text("ours")
    assert (elsewhere / "teacher" / "model.pt").read_text() == "someone else's"
    assert sorted(p.name for p in (elsewhere / "teacher").iterdir()) == ["model.pt"]  # no scratch left there
    # a link as the output itself is removed, never followed
    (project / "table.csv").symlink_to(elsewhere / "teacher" / "model.pt")
    with stage_outputs(project / "table.csv", root=project) as scratch:
        (scratch / "table.csv").write_text("new")
    assert (project / "table.csv").read_text() == "new" and not (project / "table.csv").is_symlink()
    assert (elsewhere / "teacher" / "model.pt").read_text() == "someone else's"


class FakeRun:
    run_id = "0" * 32

    def __init__(self, fail: bool):
        self.fail = fail

    def log_model(self, model, model_file, onnx_file, lineage_file, metrics):
        assert onnx_file.is_file() and "test_top1" in metrics
        if self.fail:
            raise RuntimeError("artifact store unavailable")


@pytest.mark.parametrize("fail", [False, True])
def test_a_model_folder_appears_whole_or_not_at_all(tmp_path, fail):
    """A failure after the model is saved (here: logging it) leaves no model.pt or metrics.json;
    the .gitignore DVC keeps in the folder stays."""
    raw = load_digits_dataset(tmp_path)
    train, val = split_train_val(raw.train, 0.1, seed=0)
    prepared = data.Prepared(train, val, raw.test, {"mean": [0.3], "std": [0.3], "classes": raw.classes})
    model = build_model("lenet5", 10, (1, 8, 8), 0.25)
    folder = tmp_path / "models" / "teacher"
    folder.mkdir(parents=True)
    (folder / ".gitignore").write_text("/model.pt\n")  # DVC's, tracked by git: kept

    def write():
        with model_folder(folder, tmp_path) as scratch:
            return save_outputs(model, folder, scratch=scratch, prepared=prepared, run=FakeRun(fail), meta={})

    if fail:
        with pytest.raises(RuntimeError, match="artifact store"):
            write()
        assert sorted(p.name for p in folder.iterdir()) == [".gitignore"]
    else:
        metrics = write()
        assert sorted(p.name for p in folder.iterdir()) == [".gitignore"] + sorted(set(MODEL_OUTPUTS) - {"history.csv"})
        assert json.loads((folder / "lineage.json").read_text()) == {"mlflow_run_id": FakeRun.run_id}
        assert metrics["params"] > 0


# ---- a corrupt input gives one line and loses nothing ---------------------------------------------

@pytest.fixture
def copied(project, tmp_path, monkeypatch):
    """A copy of the finished project, its tracking store included, as the working directory."""
    root = tmp_path / "copy"
    shutil.copytree(project.layout.root, root, symlinks=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store.db'}")
    monkeypatch.chdir(root)
    return Layout(root)


def outputs_of(layout: Layout) -> dict[str, bytes]:
    return {str(p.relative_to(layout.root)): p.read_bytes()
            for p in sorted([layout.latency, *layout.reports.rglob("*")]) if p.is_file()}


def corrupt_the_teacher_onnx(layout: Layout) -> None:
    (layout.teacher / "model.onnx").write_bytes(b"not an onnx file")


def place_the_teacher_onnx_as_the_pruned_one(layout: Layout) -> None:
    shutil.copy(layout.teacher / "model.onnx", layout.pruned(RATIO) / "model.onnx")


def cut_the_teacher_metrics_short(layout: Layout) -> None:
    path = layout.teacher / "metrics.json"
    path.write_text(path.read_text()[:20])


def cut_the_predictions_short(layout: Layout) -> None:
    path = layout.retrained(RATIO, "kd", 0) / "predictions.npy"
    path.write_bytes(path.read_bytes()[:100])


def swap_in_another_models_predictions(layout: Layout) -> None:  # a shape that fits, the wrong model's
    shutil.copy(layout.pruned(RATIO) / "predictions.npy", layout.retrained(RATIO, "kd", 0) / "predictions.npy")


def garble_the_latency_table(layout: Layout) -> None:
    layout.latency.write_bytes(b"\x00\x01garbage\xff")


@pytest.mark.parametrize("stage, corrupt, says", [
    (latency, corrupt_the_teacher_onnx, "teacher/model.onnx: not a readable ONNX model of"),
    (latency, place_the_teacher_onnx_as_the_pruned_one, "0.3/model.onnx: not the deploy form of"),
    (report, cut_the_teacher_metrics_short, "teacher/metrics.json: not valid JSON"),
    (report, cut_the_predictions_short, "0.3-kd-0/predictions.npy: not a predictions file"),
    (report, swap_in_another_models_predictions, "but its metrics.json says"),
    (report, garble_the_latency_table, "latency.csv: "),
])
def test_a_corrupt_input_gives_one_line_and_keeps_the_previous_outputs(copied, capsys, stage, corrupt, says):
    before = outputs_of(copied)
    corrupt(copied)
    if stage is report and corrupt is garble_the_latency_table:
        before = outputs_of(copied)  # the garbled table is the input here, and must stay as it is
    assert stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert outputs_of(copied) == before  # nothing lost, nothing half-written
    assert not [p for p in copied.root.rglob("*.tmp")]


def a_teacher_of_other_data(layout: Layout) -> None:
    model, meta = load_model(layout.teacher / "model.pt")
    save_model(model, layout.teacher / "model.pt", meta | {"data_manifest_md5": "0" * 32})  # digest recomputed


def a_pruned_model_relabelled(layout: Layout) -> None:
    """A model pruned further (0.6) whose meta is edited to say 0.3, its SHA-256 recomputed."""
    from prunekd.prune import prune as prune_model

    teacher, _ = load_model(layout.teacher / "model.pt")
    _, meta = load_model(layout.pruned(RATIO) / "model.pt")
    further = prune_model(teacher, 0.6, "params", "l1", seed=0, round_to=1).model
    save_model(further, layout.pruned(RATIO) / "model.pt", meta)


def a_sensitivity_table_of_another_network(layout: Layout) -> None:
    raw = yaml.safe_load(layout.params.read_text())
    raw["prune"]["schedule"] = "sensitivity"
    layout.params.write_text(yaml.safe_dump(raw, sort_keys=False))
    curves = pd.read_csv(layout.curves)
    curves.assign(channels=curves["channels"] * 2).to_csv(layout.curves, index=False)


@pytest.mark.parametrize("stage, argv, forge, says", [
    (prune, ["--ratio", "0.3"], a_teacher_of_other_data, "teacher/model.pt: made from other data"),
    (prune, ["--ratio", "0.3"], a_sensitivity_table_of_another_network, "curves.csv: made for another network"),
    (retrain, ["--ratio", "0.3", "--mode", "kd", "--seed", "0"], a_pruned_model_relabelled,
     "0.3/model.pt: its filters per layer are not what pruning the teacher at 0.3 gives"),
])
def test_a_forged_model_file_is_refused_in_one_line(copied, capsys, stage, argv, forge, says):
    folder = copied.pruned(RATIO) if stage is prune else copied.retrained(RATIO, "kd", 0)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    forge(copied)
    assert stage.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before  # the stage's previous outputs, every byte


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["teacher/metrics.json", "teacher/predictions.npy", "pruned/0.3/predictions.npy",
                               "retrained/0.3-ft-0/metrics.json", "retrained/0.3-kd-0/predictions.npy"]),
       cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                       st.integers(1, 255)), max_size=4))
def test_the_report_on_damaged_inputs_exits_0_or_2_in_one_line_and_keeps_its_outputs(copied, capsys, target, cut,
                                                                                   flips):
    path = copied.root / "models" / target
    good, before = path.read_bytes(), outputs_of(copied)
    data = bytearray(good[:max(1, int(cut * len(good)))] if cut > 0.5 else good)
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path.write_bytes(bytes(data))
    try:
        code = report.main([])
        err = capsys.readouterr().err.strip()
        assert code in (0, 2) and "Traceback" not in err, err[-2000:]
        if code == 2:
            assert len(err.splitlines()) == 1 and outputs_of(copied) == before
    finally:
        path.write_bytes(good)


def test_a_copied_project_logs_its_artifacts_into_itself_not_the_original(project, copied):
    from prunekd.tracking import stage_run

    original = sorted(p for p in project.layout.artifacts.rglob("*"))
    with stage_run("check", project.params, layout=copied) as run:
        (copied.root / "note.txt").write_text("logged in the copy")
        run.log_artifact(copied.root / "note.txt")
    assert sorted(p for p in project.layout.artifacts.rglob("*")) == original  # the original untouched
    assert [p for p in copied.artifacts.rglob("note.txt")]
    client = MlflowClient(f"sqlite:///{copied.root / 'store.db'}")
    experiment = client.get_experiment_by_name("prunekd")
    assert experiment.artifact_location == copied.artifacts.as_uri()
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    assert all(r.info.artifact_uri.startswith(copied.artifacts.as_uri()) for r in runs)


REFUSALS = [("config", "ConfigError", ValueError), ("data", "DataError", RuntimeError),
            ("models", "ModelFileError", RuntimeError), ("prune", "PruneTargetError", ValueError),
            ("train", "DivergenceError", RuntimeError), ("io", "MissingInputError", FileNotFoundError),
            ("io", "CorruptInputError", ValueError), ("io", "StageBusyError", RuntimeError),
            ("io", "OutsideProjectError", RuntimeError), ("export", "ExportError", RuntimeError),
            ("tracking", "TrackingError", RuntimeError)]


@pytest.mark.parametrize("module, name, base", REFUSALS, ids=[name for _, name, _ in REFUSALS])
def test_every_refusal_is_a_user_error_the_cli_prints_in_one_line(tmp_path, monkeypatch, capsys, module, name, base):
    import importlib

    from prunekd.errors import UserError
    from prunekd.stages.cli import run_cli

    cls = getattr(importlib.import_module(f"prunekd.{module}"), name)
    assert issubclass(cls, UserError) and issubclass(cls, base)  # callers catching the old base still do
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.chdir(tmp_path)

    def body(args, params, layout):
        raise cls("input.pt: what is wrong\nand what to do")

    assert run_cli("check", [], body) == 2
    assert capsys.readouterr().err == "prunekd check: error: input.pt: what is wrong and what to do\n"


@pytest.mark.parametrize("link", [".prunekd", ".prunekd/checkpoints", ".prunekd/checkpoints/check"])
def test_a_working_folder_linked_out_of_the_project_stops_a_stage_before_it_writes(tmp_path, monkeypatch, capsys,
                                                                                   link):
    from prunekd.stages.cli import run_cli

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    (project / link).parent.mkdir(parents=True, exist_ok=True)
    (project / link).symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.chdir(project)
    ran = []
    assert run_cli("check", [], lambda args, params, layout: ran.append(1), tracked=False) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "outside the project" in line and not ran and not any(elsewhere.iterdir())  # no lock, no checkpoint


def test_a_download_writes_nothing_through_a_link_out_of_the_project(tmp_path, monkeypatch):
    from prunekd.data import load_fashion_mnist
    from prunekd.io import OutsideProjectError

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True), elsewhere.mkdir()
    (project / "data" / "raw").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.chdir(project)
    monkeypatch.setattr("prunekd.data.SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")
    with pytest.raises(OutsideProjectError, match="outside the project"):
        load_fashion_mnist(Path("data/raw"))  # no copy anywhere: it would download into data/raw
    assert not any(elsewhere.iterdir())


def test_prepare_refuses_a_data_folder_linked_out_of_the_project_before_it_reads_or_downloads(tmp_path, monkeypatch):
    from prunekd.config import load_params
    from prunekd.io import OutsideProjectError
    from prunekd.paths import Layout
    from prunekd.stages import prepare

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    (project / "data").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setitem(prepare.DATASETS, "fashion_mnist", lambda raw: pytest.fail("read the data"))
    with pytest.raises(OutsideProjectError, match="outside the project"):
        prepare.run(load_params(project / "params.yaml"), Layout(project))
    assert not any(elsewhere.iterdir())


def test_the_report_runs_description_states_the_verdicts_before_the_table():
    from prunekd.stages.report import run_description

    report = "\n".join(["# Report", "", "## The answer: what retraining adds", "", "In this regime (2 epochs).", "",
                        "| ratio | FT |", "|---|---|", "| 0.5 | 91 |", "",
                        "- **50 % of params removed**: KD − FT: +0.10", "- **75 % of params removed**: KD − FT: +0.20",
                        "", "Pooled across the 2 ratios: KD − FT: +0.15", "", "This block states 5 intervals.", "",
                        "![figure](figures/x.png)", "", "## Against the thesis", "", "other"])
    paragraphs = run_description(report).split("\n\n")
    assert paragraphs[0] == "## The answer: what retraining adds"
    assert paragraphs[1].startswith("- **50 %") and paragraphs[1].endswith("+0.20")
    assert paragraphs[2].startswith("Pooled across") and paragraphs[3].startswith("In this regime")
    assert paragraphs[4].startswith("| ratio") and "![figure]" not in run_description(report)
    assert "Against the thesis" not in run_description(report)


def test_runs_are_named_to_read_as_words():
    from prunekd.tracking.run import run_name

    assert run_name("retrain@0.5-kd-0") == "retrain 0.5 kd seed 0"
    assert run_name("retrain@0.26-scratch_kd-12") == "retrain 0.26 scratch_kd seed 12"
    assert run_name("prune@0.75") == "prune 0.75"
    assert [run_name(s) for s in ("teacher", "report", "sensitivity")] == ["teacher", "report", "sensitivity"]
