"""The deploy form that latency is measured on computes what the trained model computes, and
the latency table times every architecture on every runtime."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from prunekd.config import MeasureConfig
from prunekd.export import export_onnx
from prunekd import latency
from prunekd.latency import (LATENCY_COLUMNS, Architecture, latency_table, round_sizes, speedup_in_turns,
                             times_in_turns)
from prunekd.measure import count_macs_params, fold_batchnorm
from prunekd.models import build_model
from prunekd.prune import prune


def trained_like(arch: str, shape=(1, 28, 28)) -> nn.Module:
    """A model whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(0)
    model = build_model(arch, 10, shape, 0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["mobilenet_v1", "alexnet"])
def test_folding_batchnorm_removes_it_and_keeps_the_outputs(arch):
    model = trained_like(arch)
    folded = fold_batchnorm(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_folding_leaves_the_model_itself_alone_and_models_without_batchnorm_as_they_are():
    model = trained_like("mobilenet_v1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lenet = build_model("lenet5", 10, (1, 28, 28), 1.0).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fold_batchnorm(lenet)(x), lenet(x))


def test_latency_table_times_every_architecture_on_every_runtime_and_batch(tmp_path, monkeypatch):
    base = trained_like("mobilenet_v1")
    pruned = prune(base, 0.75, "channels", "l1").model
    archs = [Architecture(r, m, export_onnx(m, tmp_path / f"{r}.onnx")) for r, m in ((0.0, base), (0.75, pruned))]
    measure = MeasureConfig(runtimes=["onnxruntime", "torch"], batch_sizes=[1, 3], threads=1, warmup=1, repeats=4,
                            rounds=2)
    timed = []  # what each (runtime, batch) really measured, kept as the table is made from it

    def kept(*args, **kwargs):
        timed.append(times_in_turns(*args, **kwargs))
        return timed[-1]
    monkeypatch.setattr(latency, "times_in_turns", kept)
    rows = latency_table(archs, measure)
    assert [(r["runtime"], r["batch"], r["ratio"]) for r in rows] == [
        (rt, b, ratio) for rt in ("onnxruntime", "torch") for b in (1, 3) for ratio in (0.0, 0.75)]
    assert all(set(r) == set(LATENCY_COLUMNS) for r in rows)
    macs_ratio = count_macs_params(base)[0] / count_macs_params(pruned)[0]
    sizes = round_sizes(measure.repeats, measure.rounds)
    for (teacher, other), (teacher_ms, other_ms) in zip(zip(rows[::2], rows[1::2]), timed, strict=True):
        assert teacher["speedup"] == 1.0 and teacher["macs_ratio"] == 1.0
        assert teacher["speedup_low"] == teacher["speedup_high"] == 1.0
        # each row's figures are its own times' (the teacher's over the pruned one's, paired by round),
        # whatever a loaded machine made of them
        assert teacher["median_ms"] == np.median(teacher_ms) and other["median_ms"] == np.median(other_ms)
        assert (other["speedup"], other["speedup_low"], other["speedup_high"]) == pytest.approx(
            speedup_in_turns(teacher_ms, other_ms, sizes))
        assert other["speedup_low"] <= other["speedup"] <= other["speedup_high"]
        assert other["macs_ratio"] == pytest.approx(macs_ratio)
        assert 0 < other["p25_ms"] <= other["median_ms"] <= other["p75_ms"]
        assert other["ms_per_image"] == pytest.approx(other["median_ms"] / other["batch"])
    assert all(np.isnan(r["int8_speedup"]) for r in rows)  # no int8 forms here
    assert not any(isinstance(m, nn.Identity) for m in base.modules())  # the fold worked on a copy
    assert base.stem[0].weight.is_contiguous()  # and so did channels_last


def test_an_int8_forms_row_gives_its_speedup_over_its_fp32_form_with_an_interval_over_the_rounds(tmp_path):
    model = trained_like("mobilenet_v1")
    onnx_file = export_onnx(model, tmp_path / "model.onnx")
    # any ONNX graph times as an "int8 form": here the fp32 one again, so the two forms do the same work
    archs = [Architecture(0.0, model, onnx_file, int8_file=onnx_file)]
    measure = MeasureConfig(runtimes=["onnxruntime", "torch"], batch_sizes=[1], threads=1, warmup=2, repeats=40,
                            rounds=4)
    rows = latency_table(archs, measure)
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32")]
    fp32, int8, eager = rows
    assert all(np.isnan(r[c]) for r in (fp32, eager) for c in ("int8_speedup", "int8_speedup_low", "int8_speedup_high"))
    assert 0 < int8["int8_speedup_low"] < int8["int8_speedup"] < int8["int8_speedup_high"]


def test_rounds_split_the_calls_as_evenly_as_they_can():
    assert round_sizes(10, 3) == [4, 3, 3]
    assert round_sizes(2, 10) == [1, 1]  # never an empty round
    assert round_sizes(5, 1) == [5]


def test_a_speedup_in_turns_is_paired_by_round_so_noise_shared_by_a_round_cancels():
    rng = np.random.default_rng(0)
    sizes = [50] * 10
    drift = np.repeat(rng.uniform(1, 3, len(sizes)), 50)  # each round's machine state, shared by both forms
    fast = drift * rng.uniform(0.95, 1.05, 500)
    slow = 1.2 * drift * rng.uniform(0.95, 1.05, 500)
    point, low, high = speedup_in_turns(slow, fast, sizes)
    assert low < 1.2 < high and low > 1.15 and high < 1.25
    # unpaired (the rounds of one form shuffled against the other's), the drift makes it wide
    shuffled = np.concatenate([slow[50 * r:50 * r + 50] for r in rng.permutation(10)])
    _, low, high = speedup_in_turns(shuffled, fast, sizes)
    assert low < 1.0 < high
    # the same times: a speedup of 1, and one round gives no interval
    assert speedup_in_turns(fast, fast, sizes)[0] == pytest.approx(1.0)
    point, low, high = speedup_in_turns(slow, fast, [500])
    assert point == pytest.approx(np.median(slow) / np.median(fast)) and np.isnan(low) and np.isnan(high)


def test_each_int8_form_is_paired_with_its_own_networks_fp32_form(tmp_path, monkeypatch):
    base = trained_like("mobilenet_v1")
    pruned = prune(base, 0.5, "channels", "l1").model
    files = {r: export_onnx(m, tmp_path / f"{r}.onnx") for r, m in ((0.0, base), (0.5, pruned))}
    archs = [Architecture(r, m, files[r], int8_file=files[r]) for r, m in ((0.0, base), (0.5, pruned))]
    # two rounds of two calls; the forms in _forms' order: fp32 0, fp32 0.5, int8 0, int8 0.5
    given = [np.array([4.0, 4.0, 8.0, 8.0]), np.array([2.0, 2.0, 2.0, 2.0]),
             np.array([2.0, 2.0, 2.0, 2.0]), np.array([1.0, 1.0, 4.0, 4.0])]
    monkeypatch.setattr(latency, "times_in_turns", lambda runners, *a, **k: given[:len(runners)])
    measure = MeasureConfig(runtimes=["onnxruntime"], batch_sizes=[1], threads=1, warmup=0, repeats=4, rounds=2)
    rows = {(r["ratio"], r["precision"]): r for r in latency_table(archs, measure)}
    assert rows[0.0, "int8"]["int8_speedup"] == pytest.approx(np.sqrt(2 * 4))  # 4/2 then 8/2, not against 0.5's
    assert rows[0.5, "int8"]["int8_speedup"] == pytest.approx(np.sqrt(2 * 0.5))  # 2/1 then 2/4
    assert rows[0.5, "int8"]["int8_speedup_low"] < 1 < rows[0.5, "int8"]["int8_speedup_high"]
    # every form's speedup is over the fp32 teacher, paired by round in the same way
    assert rows[0.0, "fp32"]["speedup"] == rows[0.0, "fp32"]["speedup_low"] == rows[0.0, "fp32"]["speedup_high"] == 1
    assert rows[0.5, "fp32"]["speedup"] == pytest.approx(np.sqrt(2 * 4))  # 4/2 then 8/2
    assert rows[0.5, "int8"]["speedup"] == pytest.approx(np.sqrt(4 * 2))  # 4/1 then 8/4
    assert rows[0.0, "int8"]["speedup"] == pytest.approx(rows[0.0, "int8"]["int8_speedup"])  # the teacher's own fp32
    assert rows[0.5, "int8"]["speedup_low"] < rows[0.5, "int8"]["speedup"] < rows[0.5, "int8"]["speedup_high"]


def turns_taken(seed: int, names: str = "abcd", rounds: int = 40) -> tuple[list[str], list[np.ndarray]]:
    """Which runner took each turn of ``times_in_turns`` (two timed calls a turn), checking that each
    turn makes its runner afresh and calls it once untimed first."""
    calls, made = [], []

    def maker(name: str):
        def make():
            made.append(name)
            return lambda: calls.append((name, len(made)))  # which runner, and which making of it
        return make
    times = times_in_turns([maker(name) for name in names], warmup=1, repeats=2 * rounds, rounds=rounds, seed=seed)
    assert len(made) == len(names) * rounds and len(calls) == 3 * len(made)
    turns = [calls[3 * i:3 * i + 3] for i in range(len(made))]
    assert all(len(set(turn)) == 1 and turn[0] == (made[i], i + 1) for i, turn in enumerate(turns))
    return made, times


def test_each_round_runs_every_runner_once_in_an_order_of_its_own():
    turns, times = turns_taken(seed=0)
    assert all(sorted(turns[4 * r:4 * r + 4]) == list("abcd") for r in range(40))
    assert [len(t) for t in times] == [80] * 4
    # no runner keeps a neighbour or a place: each turn after a's goes to b, c or d about alike
    # (a fixed order, or a reversed one every other round, gives one of them all and the others none)
    after_a = Counter(turns[i + 1] for i in range(len(turns) - 1) if turns[i] == "a")
    assert all(5 <= after_a[name] <= 20 for name in "bcd"), after_a
    firsts = Counter(turns[4 * r] for r in range(40))
    assert all(firsts[name] >= 4 for name in "abcd"), firsts
    # the orders are the seed's: the same again, another for another seed
    assert turns_taken(seed=0)[0] == turns and turns_taken(seed=1)[0] != turns
    with pytest.raises(ValueError, match="rounds of"):
        speedup_in_turns(times[0], times[1][:3], round_sizes(80, 40))
