"""A logged model's pip requirements: pinned to what is installed and checked by MLflow as before,
without MLflow's scan of every installed distribution (tracking/run.py, pinned_requirements)."""

import logging
from importlib.metadata import version

import importlib_metadata
import mlflow.onnx
import onnx
import pytest
from mlflow.utils import requirements_utils
from onnx import TensorProto, helper

from prunekd.tracking.run import pinned_requirements


def identity_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def scans(monkeypatch) -> list[int]:
    """How many times MLflow scans the installed distributions, from a process that has not yet."""
    made = []
    scan = importlib_metadata.packages_distributions

    def counted():
        made.append(1)
        return scan()
    monkeypatch.setattr(importlib_metadata, "packages_distributions", counted)
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    return made


def saved_requirements(folder, pins: list[str]) -> list[str]:
    mlflow.onnx.save_model(identity_model(), str(folder), pip_requirements=pins)
    return (folder / "requirements.txt").read_text().split()


def test_a_pinned_model_is_saved_with_its_requirements_and_no_scan(tmp_path, scans):
    pin = f"onnxruntime=={version('onnxruntime')}"
    with pinned_requirements():
        inside = saved_requirements(tmp_path / "inside", [pin])
    assert scans == []
    assert requirements_utils._MODULES_TO_PACKAGES is None  # unmade again, for any other caller
    # the same requirements as MLflow writes after its scan (which it still makes outside)
    assert inside == saved_requirements(tmp_path / "outside", [pin]) and len(scans) == 1
    assert pin in inside and f"mlflow=={mlflow.__version__}" in inside


def test_a_pin_the_installed_version_misses_is_still_reported(tmp_path, scans, caplog):
    with caplog.at_level(logging.WARNING, logger="mlflow"), pinned_requirements():
        saved_requirements(tmp_path / "model", ["onnxruntime==0.0.1"])
    assert scans == []
    assert "onnxruntime (current: " in caplog.text and "required: onnxruntime==0.0.1" in caplog.text


def test_a_map_already_made_is_left_as_it_is(scans):
    made = {"numpy": ["numpy"]}
    requirements_utils._MODULES_TO_PACKAGES = made
    with pinned_requirements():
        assert requirements_utils._MODULES_TO_PACKAGES is made
    assert requirements_utils._MODULES_TO_PACKAGES is made
