"""The deploy form as ONNX: ONNX Runtime computes what PyTorch computes, for every architecture,
unpruned and pruned; an operator ONNX cannot express is named in one line."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from prunekd.export import ExportError, export_onnx, onnx_bytes
from prunekd.latency import onnx_session
from prunekd.models import MODELS, save_model
from prunekd.prune import prune

from .test_measure import trained_like


@pytest.mark.parametrize("ratio", [0.0, 0.5])
@pytest.mark.parametrize("arch", list(MODELS))
def test_onnxruntime_logits_equal_pytorch(arch, ratio, tmp_path):
    model = prune(trained_like(arch), ratio, "channels", "l1").model
    session = onnx_session(export_onnx(model, tmp_path / "model.onnx"))
    x = torch.randn(5, *model.input_shape)  # a batch size the export never saw: the axis is dynamic
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_same_weights_export_to_the_same_bytes():
    model = trained_like("mobilenet_v1")
    assert onnx_bytes(model) == onnx_bytes(model)
    other = trained_like("mobilenet_v1")
    with torch.no_grad():
        other.classifier.bias.add_(1)
    assert onnx_bytes(other) != onnx_bytes(model)


class Unexportable(nn.Module):
    """A model with an operator the ONNX exporter does not support."""
    input_shape = (1, 4, 4)

    def forward(self, x):
        return torch.special.zeta(x, x)


def test_an_unsupported_operator_names_the_model_and_the_operator(tmp_path, capfd):
    with pytest.raises(ExportError) as err:
        export_onnx(Unexportable(), tmp_path / "odd.onnx", "models/odd/model.pt")
    message = str(err.value)
    assert message.startswith("models/odd/model.pt: cannot export to ONNX: operator aten::special_zeta")
    assert "\n" not in message and not (tmp_path / "odd.onnx").exists()
    out, errout = capfd.readouterr()
    assert "graph" not in out + errout  # the exporter's graph dump is kept off the terminal


def test_export_command_writes_the_file_or_says_why_in_one_line(tmp_path):
    model = trained_like("lenet5")
    save_model(model, tmp_path / "model.pt")
    ok = subprocess.run([sys.executable, "-m", "prunekd.cli", "export", str(tmp_path / "model.pt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "model.onnx").read_bytes() == onnx_bytes(model)
    bad = subprocess.run([sys.executable, "-m", "prunekd.cli", "export", str(tmp_path / "missing.pt")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"prunekd export: error: {tmp_path / 'missing.pt'}: model file "
                                               "not found; run the stage that makes it first"]


def test_export_never_writes_over_the_model_it_reads(tmp_path, capsys):
    from prunekd.export import main
    from prunekd.models import build_model

    path = tmp_path / "m.pt"
    save_model(build_model("lenet5", 10, (1, 8, 8)), path, meta={})
    before = path.read_bytes()
    assert main([str(path), "--out", str(tmp_path / "." / "m.pt")]) == 2
    assert "is the model file itself" in capsys.readouterr().err and path.read_bytes() == before


def test_a_sweep_that_is_not_a_run_id_never_reaches_a_filter():
    from prunekd.tracking import TrackingError, sweep_runs

    with pytest.raises(TrackingError, match="not 'latest', 'all' or an MLflow run id"):
        sweep_runs("x' or tags.mode = 'kd")
