"""benchmarks/gpu.py, the GPU check, in its quick form on this machine's CPU: it runs, its short
study goes through every stage without MLflow, and on the CPU the determinism it checks holds (two
runs and a killed and resumed one, bit for bit)."""

import json
import subprocess
import sys

from ..conftest import ROOT, clean_env, without_mlflow


def test_the_gpu_check_runs_quick_on_the_cpu_and_finds_determinism(tmp_path):
    """Where MLflow cannot be imported, as on a GPU machine without it."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--quick", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=clean_env(**without_mlflow(tmp_path / "no-mlflow")), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert figures["quick"] and figures["device"]
    assert figures["determinism"] == {"deterministic_runs_identical": True, "resumed_equals_uninterrupted": True,
                                      "nondeterministic_max_weight_diff": 0.0}  # the CPU: deterministic either way
    speed = figures["throughput"]
    assert speed["memory_format"] == "channels_last"  # the CPU's
    assert all(speed[k] > 0 for k in ("bare_nchw", "bare_channels_last", "loop_fp32_nchw", "loop_fp32_channels_last",
                                      "loop_bf16", "loop_fp32_deterministic", "loop_over_bare"))
    assert speed["loop_fp32"] == speed["loop_fp32_channels_last"]  # the layout the stages run in
    assert speed["layout_picked_is_faster"] == (speed["loop_fp32_channels_last"] >= speed["loop_fp32_nchw"])
    study = figures["study"]
    assert {f"{m}_{r}" for m in ("none", "ft", "kd") for r in (0.26, 0.5)} <= study.keys()
    assert all(0 <= study[f"{m}_{r}"] <= 100 for m in ("none", "ft", "kd") for r in (0.26, 0.5))
    # the study went through every stage, with its matrix items, and wrote the report's answer
    runs = [f"{r}-{m}-0" for r in (0.26, 0.5) for m in ("ft", "kd")]
    assert [k.removesuffix("_s") for k in study if k.endswith("_s") and k != "stages_s"] == [
        "check", "prepare", "teacher", "sensitivity", "latency_table", "prune@0.26", "prune@0.5",
        *(f"retrain@{r}" for r in runs), "quantize_teacher", *(f"quantize@{r}" for r in runs), "latency", "report"]
    report = (tmp_path / "out" / "gpu-report.md").read_text()
    assert "## The answer" in report and f"{study['ft_0.26']:.2f}" in report
    assert "tracking off (PRUNEKD_TRACKING=off)" in proc.stderr
    assert "determinism.resumed_equals_uninterrupted: True" in proc.stdout
