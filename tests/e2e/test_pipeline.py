"""End to end: the real pipeline, run by real `dvc repro` in a temporary git copy of the repo,
logging to a real MLflow SQLite store. The DAG under test is the session's `tiny_repro`: LeNet-5
on scikit-learn's bundled digits, two ratios x {ft, kd} (seconds per stage); one test prepares
real Fashion-MNIST."""

import json
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from ..conftest import BIN, THREADS, clean_env, copy_repo, dvc, ran, runs, set_params, tiny_params

RATIOS = (0.3, 0.6)  # digits_sweep_params's


@pytest.fixture(autouse=True)
def threads(monkeypatch):
    """Every stage this module reruns gets the thread count the session repro was made with (which
    decides summation order): a forced rerun must give the same bytes."""
    for name, value in THREADS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def repo(tiny_repro):
    """The session's tiny repo after its first repro (test_flow and test_archs read only what that repro left)."""
    return tiny_repro.repo, tiny_repro.output


def test_first_repro_runs_every_stage(repo):
    repo, output = repo
    assert ran(output) == {"check", "prepare", "teacher", "sensitivity", "latency_table", "prune@0.3", "prune@0.6",
                           "latency", "report",
                           "quantize_teacher", *(f"{stage}@{r}-{m}-0" for stage in ("retrain", "quantize")
                                                 for r in RATIOS for m in ("ft", "kd"))}


def test_results_table_has_the_teacher_and_every_run(repo):
    repo, _ = repo
    results = pd.read_csv(repo / "reports" / "results.csv")
    assert results["mode"].tolist().count("teacher") == 1
    runs_ = results[results["mode"] != "teacher"]
    assert set(zip(runs_["ratio"], runs_["mode"])) == {(r, m) for r in RATIOS for m in ("ft", "kd")}
    for col in ("top1", "params", "macs", "size_mb", "latency_ms"):
        assert results[col].notna().all() and (results[col] > 0).all(), col
    # prune.unit is params: each ratio removes that fraction of parameters, within 1 point
    assert ((runs_["params_reduction_pct"] - 100 * runs_["ratio"]).abs() <= 1).all()
    assert (repo / "reports" / "figures" / "accuracy_vs_ratio.png").stat().st_size > 0
    report = (repo / "reports" / "report.md").read_text()
    assert "kd - ft" in report and "63.65" in report  # the study's FT top-1, in the comparison with it
    # each model's int8 form: the top-1 its quantize stage measured, in the table and the report
    figures = json.loads((repo / "models/retrained/0.3-kd-0/int8.json").read_text())
    assert results.loc[(results["ratio"] == 0.3) & (results["mode"] == "kd"), "top1_int8"].item() == \
        pytest.approx(figures["top1_int8"])
    assert "## int8" in report


def test_mlflow_has_one_run_per_stage_with_lineage(repo, tmp_path):
    repo, _ = repo
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs(repo)}
    assert len(by_stage) == 16 and all(r.info.status == "FINISHED" for r in by_stage.values())  # 11 + 5 quantize
    teacher, prune, kd = by_stage["teacher"], by_stage["prune@0.3"], by_stage["retrain@0.3-kd-0"]
    assert (kd.info.run_name, prune.info.run_name) == ("retrain 0.3 kd seed 0", "prune 0.3")  # the table reads as words
    assert kd.data.tags["teacher_run_id"] == teacher.info.run_id
    assert kd.data.tags["prune_run_id"] == prune.info.run_id
    assert prune.data.tags["teacher_run_id"] == teacher.info.run_id
    assert kd.data.tags["data_manifest_md5"] == by_stage["prepare"].data.tags["data_manifest_md5"]
    int8 = by_stage["quantize@0.3-kd-0"]  # the int8 form's run points at the model's, which gets its top-1
    assert int8.data.tags["model_run_id"] == kd.info.run_id and "test_top1_int8" in kd.data.metrics
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", kd.data.tags["git_commit"])
    assert kd.data.params["kd.temperature"] == "4.0" and kd.data.params["mode"] == "kd"
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(kd.info.run_id, "val_top1")] == [1]
    metrics = yaml.safe_load((repo / "models/retrained/0.3-kd-0/metrics.json").read_text())
    assert kd.data.metrics["test_top1"] == pytest.approx(metrics["top1"])
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    # prunekd's own model file travels inside the logged model
    folder = Path(mlflow.artifacts.download_artifacts(kd.data.tags["prunekd.model_uri"], dst_path=str(tmp_path)))
    assert (folder / "extra_files" / "model.pt").read_bytes() == (repo / "models/retrained/0.3-kd-0/model.pt").read_bytes()
    # and MLflow's own form of it is a torch.export program, no pickle
    assert (folder / "data" / "model.pt2").is_file()
    assert not [*folder.rglob("*.pth"), *folder.rglob("pickle_module_info.txt")]
    logged = mlflow.search_logged_models(experiment_ids=[kd.info.experiment_id], output_format="list")
    assert {m.source_run_id for m in logged} >= {teacher.info.run_id, prune.info.run_id, kd.info.run_id}
    # each model's final figures are linked to it (both forms), so the Models view ranks by them
    kd_models = [m for m in logged if m.source_run_id == kd.info.run_id]
    assert len(kd_models) == 2
    for model in kd_models:
        linked = {m.key: m.value for m in model.metrics}
        assert linked["test_top1"] == pytest.approx(metrics["top1"]) and linked["params"] == metrics["params"]
    ranked = mlflow.search_logged_models(experiment_ids=[kd.info.experiment_id], order_by=[
        {"field_name": "metrics.test_top1", "ascending": False}], output_format="list")
    tops = [m.value for r in ranked for m in r.metrics if m.key == "test_top1"]
    assert len(tops) == 2 * 7 and tops == sorted(tops, reverse=True)  # teacher, 2 pruned, 4 retrained: 2 forms each


def test_second_repro_runs_nothing(repo):
    repo, _ = repo
    before = len(runs(repo))
    assert ran(dvc(repo, "repro")) == set()
    assert len(runs(repo)) == before
    assert "up to date" in dvc(repo, "status").lower()


def test_metrics_and_plots_show(repo):
    repo, _ = repo
    shown = dvc(repo, "metrics", "show")
    assert "reports/metrics.json" in shown and "models/" not in shown  # one flat table, not one per model
    flat = json.loads((repo / "reports/metrics.json").read_text())
    results = pd.read_csv(repo / "reports/results.csv")
    # one seed: no difference has an interval, so no <difference>_<r>_ci95
    assert set(flat) == {"teacher_top1", *(f"{k}_{r}" for r in ("30", "60") for k in (
        "params_removed", "top1_none", "top1_ft", "top1_kd", "kd_minus_ft", "kd_minus_none", "ft_minus_none",
        "ft_minus_teacher", "kd_minus_teacher"))} | {  # and each int8 form's change (one model: over test images)
        f"int8_change_{m}{suffix}" for m in ("teacher", "ft_30", "ft_60", "kd_30", "kd_60") for suffix in ("", "_ci95")
    } | {f"int8_speedup_b{b}_{r}" for b in (1, 8) for r in ("0", "30", "60")}
    mean = results[(results["ratio"] == 0.3) & (results["mode"] == "kd")]["top1"].mean()
    assert flat["top1_kd_30"] == pytest.approx(mean)
    accuracy = pd.read_csv(repo / "reports/plots/accuracy.csv")
    assert list(accuracy.columns) == ["mode", "params_removed_pct", "top1"] and len(accuracy) == 6  # 2 modes x 3
    history = pd.read_csv(repo / "models/retrained/0.3-kd-0/history.csv")
    assert list(history["epoch"]) == [1] and "val_top1" in history.columns
    # the retraining curves: one table, a panel per mode and a line per ratio, not a chart per run
    curves = pd.read_csv(repo / "reports/plots/history.csv")
    assert list(curves.columns) == ["mode", "series", "epoch", "val_top1"]
    assert set(zip(curves["mode"], curves["series"])) == {(m, f"ratio {r}") for m in ("ft", "kd") for r in (0.3, 0.6)}
    assert curves.set_index(["mode", "series"]).loc[("kd", "ratio 0.3"), "val_top1"] == history["val_top1"].iloc[0]
    shown = json.loads(subprocess.run([str(BIN / "dvc"), "plots", "show", "--json", "retraining"], cwd=repo,
                                      env=clean_env(), capture_output=True, text=True, check=True).stdout)
    [plot] = shown["data"]["retraining"]
    assert plot["content"]["encoding"]["column"]["field"] == "mode" and not shown.get("errors")
    assert {v["series"] for v in plot["content"]["data"]["values"]} == {"ratio 0.3", "ratio 0.6"}
    shown = json.loads(subprocess.run([str(BIN / "dvc"), "plots", "show", "--json", "accuracy_vs_params_removed"],
                                      cwd=repo, env=clean_env(), capture_output=True, text=True, check=True).stdout)
    [plot] = shown["data"]["accuracy_vs_params_removed"]  # a line per mode, coloured by the data's mode column
    assert plot["content"]["encoding"]["color"]["field"] == "mode" and not shown.get("errors")
    assert {v["mode"] for v in plot["content"]["data"]["values"]} == {"ft", "kd"}
    dvc(repo, "plots", "show", "--out", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "accuracy_vs_params_removed" in page and "retraining" in page
    assert "models/retrained/0.3-kd-0/history.csv" not in page


@pytest.mark.parametrize("section, typo", [("kd", "temprature"), ("retrain", "epohcs"), (None, "sed")])
def test_a_misspelled_key_stops_repro_before_any_stage(repo, section, typo):
    repo, _ = repo
    original = (repo / "params.yaml").read_text()
    set_params(repo, lambda p: (p[section] if section else p).update({typo: 3}))
    proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=clean_env(), capture_output=True, text=True)
    (repo / "params.yaml").write_text(original)
    key = f"{section}.{typo}" if section else typo
    assert proc.returncode != 0 and key in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert ran(proc.stdout + proc.stderr) == {"check"}
    # the typo removed: check runs again (DVC cleared its output before the failed run) and writes the
    # same bytes, so nothing downstream of it reruns
    assert ran(dvc(repo, "repro")) == {"check"}
    assert ran(dvc(repo, "repro")) == set()


def test_kd_temperature_reruns_only_kd_stages_and_the_report(repo):
    repo, _ = repo
    set_params(repo, lambda p: p["kd"].update(temperature=2.0))
    assert ran(dvc(repo, "repro")) == {"check", "retrain@0.3-kd-0", "retrain@0.6-kd-0", "quantize@0.3-kd-0",
                                       "quantize@0.6-kd-0", "report"}


def test_latency_times_each_architecture_once_per_runtime_and_batch(repo):
    repo, _ = repo
    latency = pd.read_csv(repo / "reports" / "latency.csv")
    assert list(zip(latency["runtime"], latency["batch"], latency["precision"], latency["ratio"])) == [
        (rt, b, p, r) for rt in ("onnxruntime", "torch") for b in (1, 8)
        for p in (("fp32", "int8") if rt == "onnxruntime" else ("fp32",)) for r in (0.0, *RATIOS)]
    assert (latency[(latency["ratio"] == 0) & (latency["precision"] == "fp32")]["speedup"] == 1).all()
    results = pd.read_csv(repo / "reports" / "results.csv")
    headline = latency[(latency["runtime"] == "onnxruntime") & (latency["batch"] == 1)]
    # every model of a ratio shares its architecture's one figure per precision
    for precision, column in (("fp32", "latency_ms"), ("int8", "latency_int8_ms")):
        figures = headline[headline["precision"] == precision].set_index("ratio")["median_ms"]
        assert (results[column] == results["ratio"].map(figures)).all()
    for ratio in RATIOS:
        assert (repo / f"models/pruned/{ratio}/model.onnx").is_file()
    assert "latency per architecture" in (repo / "reports/report.md").read_text().lower()


def test_measure_reruns_only_latency_and_the_report(repo):
    repo, _ = repo
    set_params(repo, lambda p: p["measure"].update(repeats=4))
    assert ran(dvc(repo, "repro")) == {"check", "latency", "report"}


def test_the_latency_table_reruns_on_its_own_settings_and_nothing_downstream_of_an_unchanged_table(repo):
    # under prune.unit params the table is empty: a setting of its own reruns it, and since its
    # output is the same, nothing after it (the other tests here: no setting of another stage reruns it)
    repo, _ = repo
    set_params(repo, lambda p: p["prune"].update(latency_stride=3, latency_runs=7))
    assert ran(dvc(repo, "repro")) == {"check", "latency_table"}


def stale_after(repo, change) -> dict[str, list]:
    """What `dvc status` finds stale after ``change`` to the params, which are then set back: the
    stages that read what changed (those downstream of them follow as the reruns above show)."""
    original = (repo / "params.yaml").read_text()
    set_params(repo, change)
    try:
        return json.loads(subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=repo, env=clean_env(),
                                         capture_output=True, text=True, check=True).stdout)
    finally:
        (repo / "params.yaml").write_text(original)
        assert "up to date" in dvc(repo, "status").lower()


def test_quantize_settings_stale_only_the_int8_forms_and_the_latency_stage(repo):
    # the latency stage makes each pruned network's int8 form by the same recipe; the report
    # follows the int8 forms (as it follows the retrains in the kd test)
    repo, _ = repo
    stale = stale_after(repo, lambda p: p["quantize"].update(calibration_images=256))
    assert set(stale) == {"check", "quantize_teacher", "latency", *(f"quantize@{r}-{m}-0" for r in RATIOS
                                                                       for m in ("ft", "kd"))}


def test_a_student_subset_stales_only_the_retrains_and_the_report(repo):
    # the teacher never reads the students' subset, so it keeps every image
    repo, _ = repo
    stale = stale_after(repo, lambda p: p["retrain"].update(train_subset=300))
    assert set(stale) == {"check", "report", *(f"retrain@{r}-{m}-0" for r in RATIOS for m in ("ft", "kd"))}
    retrains = {name for name in stale if name.startswith("retrain@")}
    assert all(stale[name] == [{"changed deps": {"params.yaml": {"retrain.train_subset": "modified"}}}]
               for name in retrains)  # check and the report read the whole section


def test_changing_ratios_adds_and_drops_only_those_branches(repo):
    # the new ratio's branch is stale (none of it in dvc.lock), the dropped ratio's is no longer in the
    # DAG, and what reads the ratio list (the latency stage, the report) is stale; nothing of the kept
    # ratio is (asked of `dvc status`: a new branch's reruns are the first repro's, above)
    repo, _ = repo
    stale = stale_after(repo, lambda p: p["prune"].update(ratios=[0.3, 0.4]))
    assert set(stale) == {"check", "prune@0.4", "retrain@0.4-ft-0", "retrain@0.4-kd-0", "latency",
                          "quantize@0.4-ft-0", "quantize@0.4-kd-0", "report"}


# A model file's bytes depend on the model alone (its run ids live in lineage.json beside it), so a
# forced rerun that trains the same weights changes no hash and leaves everything downstream up to date.
@pytest.mark.parametrize("stage, path", [("teacher", "models/teacher"),
                                         ("retrain@0.3-ft-0", "models/retrained/0.3-ft-0")])
def test_a_forced_rerun_gives_the_same_bytes_and_leaves_downstream_up_to_date(repo, stage, path):
    repo, _ = repo
    path = repo / path
    files = ("model.pt", "model.onnx", "predictions.npy", "metrics.json")
    before = {name: (path / name).read_bytes() for name in files}
    run_before = json.loads((path / "lineage.json").read_text())["mlflow_run_id"]
    assert ran(dvc(repo, "repro", "--force", "--single-item", stage)) == {stage}
    assert {name: (path / name).read_bytes() for name in files} == before
    assert json.loads((path / "lineage.json").read_text())["mlflow_run_id"] != run_before  # a new run
    assert "up to date" in dvc(repo, "status").lower()
    assert ran(dvc(repo, "repro")) == set()


def test_sensitivity_curves_and_the_schedule_they_imply(repo):
    repo, _ = repo
    from prunekd.models import load_model
    from prunekd.prune import PruneTargetError, prune
    from prunekd.sensitivity import layer_caps, layer_names

    teacher, _ = load_model(repo / "models/teacher/model.pt")
    curves = pd.read_csv(repo / "reports/sensitivity/curves.csv")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # one curve per prunable layer of the teacher, each over the whole grid and ratio 0
    layers = layer_names(teacher)
    assert len(layers) > 1 and sorted(curves["layer"].unique()) == sorted(layers)
    assert len(curves) == len(layers) * (len(params["prune"]["sensitivity_ratios"]) + 1)
    assert (repo / "reports/sensitivity/sensitivity.png").is_file()
    # The sensitivity schedule meets the same size target as the uniform one, with another plan.
    # The tightest drop cap that still reaches the target caps the most sensitive layers.
    uniform = prune(teacher, 0.3, "params", "l1").model.channels()  # unrounded, as prune.round_to 1 makes both

    def reaches(cap):
        try:
            return bool(prune(teacher, 0.3, "params", "l1", caps=layer_caps(curves, cap),
                              max_channel_ratio=float(curves["ratio"].max())))
        except PruneTargetError:
            return False
    cap = next(float(c) for c in sorted(set(curves["drop"].clip(lower=0))) if reaches(c))
    set_params(repo, lambda p: p["prune"].update(schedule="sensitivity", sensitivity_max_drop=cap, round_to=1))
    assert ran(dvc(repo, "repro", "--single-item", "prune@0.3")) == {"prune@0.3"}
    scheduled = yaml.safe_load((repo / "models/pruned/0.3/metrics.json").read_text())
    assert scheduled["reduction"] == pytest.approx(0.3, abs=0.01)
    channels = torch.load(repo / "models/pruned/0.3/model.pt", weights_only=True)["spec"]["channels"]
    assert channels != uniform


def test_the_studys_data_and_model_through_prepare_and_the_teacher(tmp_path):
    """Real Fashion-MNIST and MobileNet (the study's setting, shrunk by tiny_params) through the real
    `dvc repro teacher`: the rest of the DAG is dataset-blind and runs above on digits."""
    from prunekd.data import FASHION_FILES
    from prunekd.models import load_model

    repo = copy_repo(tmp_path)
    set_params(repo, tiny_params)
    assert ran(dvc(repo, "repro", "teacher")) == {"check", "prepare", "teacher"}  # check first: every stage depends on it
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["dataset"] == "fashion_mnist" and len(manifest["classes"]) == 10
    assert manifest["input_shape"] == [1, 28, 28]
    assert manifest["sizes"] == {"train": 1000, "val": 6000, "test": 10000}  # train_subset 1000
    assert manifest["source_checksums"] == {name: md5 for name, _, md5 in FASHION_FILES.values()}
    model, _ = load_model(repo / "models/teacher/model.pt")
    assert type(model).__name__ == "MobileNetV1"
    metrics = json.loads((repo / "models/teacher/metrics.json").read_text())
    assert 0 <= metrics["top1"] <= 100 and metrics["params"] == sum(p.numel() for p in model.parameters())
    assert (repo / "models/teacher/model.onnx").stat().st_size > 0
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs(repo)}
    assert set(by_stage) == {"prepare", "teacher"} and all(r.info.status == "FINISHED" for r in by_stage.values())
