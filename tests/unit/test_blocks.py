"""Removing whole blocks (a layer's width 0, prune.max_blocks_removed): the shapes stay valid, the
network runs in ONNX Runtime as in PyTorch, the weights kept are the pruned network's, and a
block whose removal would change a shape is refused."""

import numpy as np
import pandas as pd
import pytest
import torch

from prunekd.export import INPUT, onnx_bytes
from prunekd.latency import onnx_session
from prunekd.models import build_model, bypassed, load_model, save_model
from prunekd.prune import PruneTargetError, prune_to_widths
from prunekd.sensitivity import BLOCK_COLUMNS, block_drops


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = build_model("mobilenet_v1", 10, (1, 28, 28), 0.5)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as a trained model's
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


# blocks of layers 7, 8 (two in a row) and 13 (the last) removed, other layers narrowed
WIDTHS = [16, 32, 48, 64, 96, 128, 192, 0, 0, 160, 256, 208, 384, 0]


def test_the_stride_1_blocks_that_keep_their_width_are_removable(teacher):
    assert teacher.channels() == [16, 32, 64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512]
    assert teacher.removable() == [3, 5, 7, 8, 9, 10, 11, 13]  # not 12: its block widens 256 -> 512
    assert bypassed(WIDTHS) == [16, 32, 48, 64, 96, 128, 192, 192, 192, 160, 256, 208, 384, 384]


def test_a_network_without_blocks_keeps_valid_shapes_and_runs_in_onnx_runtime(teacher, tmp_path):
    pruned = prune_to_widths(teacher, WIDTHS, "l1")
    assert pruned.channels() == WIDTHS and len(pruned.prunable()) == 11
    assert [type(b).__name__ for b in pruned.features].count("Identity") == 3
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = pruned(x).numpy()
    assert expected.shape == (4, 10)
    session = onnx_session(onnx_bytes(pruned), 1)
    [out] = session.run(None, {INPUT: x.numpy()})
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # the spec rebuilds it: saved and loaded, it computes the same
    again, _ = load_model(save_model(pruned, tmp_path / "model.pt"))
    assert again.spec() == pruned.spec() and again.channels() == WIDTHS
    with torch.no_grad():
        np.testing.assert_array_equal(again(x).numpy(), expected)


def test_the_weights_kept_are_those_of_the_network_pruned_to_the_widths_bypassed(teacher):
    pruned = prune_to_widths(teacher, WIDTHS, "l1")
    through = prune_to_widths(teacher, bypassed(WIDTHS), "l1").state_dict()
    state = pruned.state_dict()
    assert not any(k.startswith(("features.6.", "features.7.", "features.12.")) for k in state)
    assert set(state) < set(through)
    for key, value in state.items():
        assert torch.equal(value, through[key]), key
    # a plan without a removed block is pruned as it always was
    plain = [w or c for w, c in zip(WIDTHS, bypassed(WIDTHS))]
    assert "0" not in str(prune_to_widths(teacher, plain, "l1").channels()).split(", ")


@pytest.mark.parametrize("unit", [0, 2, 12])  # the stem; a stride-2 block; a block that widens
def test_a_block_whose_removal_changes_a_shape_is_refused(teacher, unit):
    widths = [0 if u == unit else c for u, c in enumerate(teacher.channels())]
    with pytest.raises((PruneTargetError, ValueError)):
        prune_to_widths(teacher, widths, "l1")


def test_each_removable_blocks_drop_is_measured_alone(teacher):
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        reference = teacher(x).argmax(1)

    def agreement(model) -> float:  # top-1 agreement with the unpruned network, in %
        with torch.no_grad():
            return float((model(x).argmax(1) == reference).float().mean()) * 100

    seen = []
    drops = block_drops(teacher, lambda m: seen.append(m.channels()) or agreement(m))
    assert list(drops.columns) == BLOCK_COLUMNS
    assert drops["index"].tolist() == teacher.removable()
    assert drops["block"].tolist() == [f"features.{u - 1}" for u in teacher.removable()]
    assert seen[0] == teacher.channels()  # the unpruned network first, then each block removed alone
    assert [w.count(0) for w in seen[1:]] == [1] * len(drops)
    assert (drops["drop"] == 100 - drops["val_top1"]).all() and (drops["drop"] >= 0).all()
    assert isinstance(drops, pd.DataFrame)
