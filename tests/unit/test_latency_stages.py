"""prune.unit latency through the stages, in-process: the latency_table stage measures a MobileNet v1
(width 0.5) for digits' 8x8 images on a real ONNX Runtime, prune meets a target near 40 % of the
teacher's measured time within 5 % (one a plan reaches on this machine: ``reachable``), retrain
accepts the plan it re-derives, and bad input is refused in one line. The teacher is untrained:
time does not depend on weights."""

from __future__ import annotations

import json
import shutil
import statistics

import pandas as pd
import pytest
import yaml

from prunekd.config import load_params
from prunekd.io import CorruptInputError, MissingInputError
from prunekd.models import build_model, load_model, read_meta, save_model
from prunekd.paths import MODEL_FILE, Layout
from prunekd.prune import PruneTargetError
from prunekd.report import budget_section, latency_budgets
from prunekd.stages import latency_table, plans, prepare, prune, retrain, sensitivity
from prunekd.stages.latency_table import read_latency_table
from prunekd.stages.prune import LATENCY_TOLERANCE

from ..conftest import ROOT, digits_params

RATIO = 0.4
DEEP = 0.55  # the depth test's ratio


def write_params(layout: Layout, **prune_keys) -> None:
    raw = digits_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["model"].update(arch="mobilenet_v1", width=0.5)
    raw["prune"].update(ratios=[RATIO], unit="latency", schedule="uniform", round_to=16, latency_stride=8,
                        latency_runs=10, latency_repeats=100, bn_recalibration_batches=1)
    raw["prune"].update(prune_keys)
    raw["retrain"].update(modes=["ft"], seeds=[0], epochs=1)
    raw["measure"].update(runtimes=["onnxruntime"], batch_sizes=[1])
    layout.params.write_text(yaml.safe_dump(raw, sort_keys=False))


def reachable(layout: Layout, nominal: float) -> float:
    """A ratio of latency that a plan on the search's path is measured to remove on this machine:
    that of the plan the table gives for ``nominal``, timed as the prune stage times it (to 3
    decimals). On digits' 8x8 images a whole pass takes tens of microseconds and ONNX Runtime's time
    is not monotone in the widths, so a step of 16 filters in one layer can jump past the 5 %
    band: a fixed target is met on one machine and missed on another. A target some plan measures
    is reachable here, and the search must still find a plan within 5 % of it. The plan is timed
    three times and the median kept: on a loaded machine (CI's two workers) one timing of it once
    read 52 % of the teacher's time where the stage then read 46 %, a miss by the test's own noise."""
    params = load_params(layout.params)
    teacher, _ = load_model(layout.teacher / MODEL_FILE)
    table = read_latency_table(layout, teacher)[0]
    planner = plans.latency_planner(teacher, params, table, plans.sensitivity_curves(params, layout, teacher),
                                    plans.block_drops(params, layout, teacher))
    widths, _ = planner((1 - nominal) * table.predict(teacher.channels()))
    timed = prune.TimedPlans(teacher, threads=params.measure.threads, batch=params.prune.latency_batch,
                             repeats=params.prune.latency_repeats)
    return round(1 - statistics.median(timed(widths) for _ in range(3)), 3)


def pruned_at_reachable(target: Layout, nominal: float, other: Layout, tries: int = 3, **prune_keys
                        ) -> tuple[float, dict]:
    """``prune.run`` in ``other`` at a ratio of latency a plan measures here (``reachable`` on
    ``target``): the ratio and the stage's figures. The target and the stage time the networks
    seconds apart; on a loaded machine (CI's two workers, or this one's other tenants) a timing of
    these tens-of-microsecond passes can move by more than the stage's 5 % between them, so a
    miss is retried with a fresh target, ``tries`` times in all. A search that cannot meet a target
    its own plan measured still fails every time."""
    for attempt in range(tries):
        ratio = reachable(target, nominal)
        write_params(other, ratios=[ratio], **prune_keys)
        try:
            return ratio, prune.run(load_params(other.params), other, ratio)
        except PruneTargetError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def copied(layout: Layout, root) -> Layout:
    """A project at ``root`` with ``layout``'s prepared data, teacher and latency table."""
    other = Layout(root)
    for folder in ("prepared", "teacher", "latency_table"):
        shutil.copytree(getattr(layout, folder), getattr(other, folder))
    return other


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Layout:
    """Prepared digits, an untrained MobileNet v1 as the teacher, and the latency table."""
    layout = Layout(tmp_path_factory.mktemp("latency"))
    write_params(layout)
    params = load_params(layout.params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{layout.root / 'store.db'}")
        prepare.run(params, layout)
        from prunekd.data import load_prepared

        prepared = load_prepared(layout.prepared)
        teacher = build_model("mobilenet_v1", prepared.num_classes, prepared.input_shape, 0.5)
        save_model(teacher, layout.teacher / MODEL_FILE, meta=prepared.identity)
        latency_table.run(params, layout)
    return layout


@pytest.fixture(autouse=True)
def store(layout, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{layout.root / 'store.db'}")


def test_the_table_is_the_teachers_architecture_under_its_settings(layout):
    meta = json.loads(layout.latency_table_meta.read_text())
    teacher, _ = load_model(layout.teacher / MODEL_FILE)
    assert meta["measured"] and meta["channels"] == teacher.channels() and meta["input_shape"] == [1, 8, 8]
    assert (meta["runtime"], meta["batch"], meta["threads"], meta["round_to"]) == ("onnxruntime", 1, 1, 16)
    rows = layout.latency_table_rows.read_text().splitlines()
    assert rows[0] == "operator,layers,widths,us" and len(rows) > 100


def test_prune_meets_the_measured_target_and_retrain_accepts_the_plan(layout, tmp_path):
    other = copied(layout, tmp_path)
    ratio, figures = pruned_at_reachable(layout, RATIO, other)
    params = load_params(other.params)
    kept = 1 - figures["latency_removed"]
    assert abs(kept - (1 - ratio)) <= LATENCY_TOLERANCE * (1 - ratio)
    # the share paired by round, as the latency stage pairs it, with its interval over the rounds;
    # the ratio of the two medians over all rounds is near it (how near depends on the machine's
    # load: under CI's two workers 0.54 against a paired 0.63 once; swapped or mislabelled medians
    # would read 1.6 or 1.0)
    assert figures["latency_removed_low"] < figures["latency_removed"] < figures["latency_removed_high"]
    assert figures["latency_measured_us"] / figures["latency_measured_full_us"] == pytest.approx(kept, rel=0.25)
    model, meta = load_model(other.pruned(ratio) / MODEL_FILE)
    assert meta["latency_budget_us"] == figures["latency_budget_us"]
    assert model.channels() == plans.pruned_channels(load_model(other.teacher / MODEL_FILE)[0], ratio, params,
                                                     other, meta)  # re-derived from the budget, not re-timed
    assert retrain.run(params, other, ratio, "ft", 0)["top1"] >= 0
    # the report's section: the prune stage's figures beside the latency stage's (here made up: 1.5x)
    budgets = latency_budgets(other, [ratio])
    assert budgets["measured kept %"].item() == pytest.approx(100 * kept)
    assert budgets["measured 95 % CI"].item() == (f"[{100 * (1 - figures['latency_removed_high']):.2f}, "
                                                   f"{100 * (1 - figures['latency_removed_low']):.2f}]")
    latency = pd.DataFrame({"ratio": [0.0, ratio], "runtime": "onnxruntime", "batch": 1, "precision": "fp32",
                            "median_ms": [0.3, 0.2], "speedup": [1.0, 1.5]})
    section = "\n".join(budget_section(budgets, latency))
    assert "## Latency budgets" in section and "66.67" in section


def test_a_target_no_plan_reaches_is_refused_touching_nothing(layout):
    params = load_params(layout.params)
    before = sorted(p.name for p in layout.pruned_root.iterdir()) if layout.pruned_root.exists() else []
    with pytest.raises(PruneTargetError, match=r"prune.ratios: 0.97 of latency is out of reach: the narrowest "
                                               r"plan runs at .*% of the unpruned network's time"):
        prune.run(params, layout, 0.97)
    assert (sorted(p.name for p in layout.pruned_root.iterdir()) if layout.pruned_root.exists() else []) == before


def test_the_command_line_says_it_in_one_line_and_exits_2(layout):
    import os
    import subprocess
    import sys

    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{layout.root / 'store.db'}"}
    proc = subprocess.run([sys.executable, "-m", "prunekd.cli", "prune", "--ratio", "0.97"], cwd=layout.root,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = [x for x in proc.stderr.strip().splitlines() if "error" in x]
    assert line.startswith("prunekd prune: error: prune.ratios: 0.97 of latency is out of reach"), line


def test_a_table_of_other_settings_or_none_is_refused(layout, tmp_path):
    other = copied(layout, tmp_path)
    write_params(other, latency_batch=2)
    with pytest.raises(CorruptInputError, match="measured with batch 1, the params ask for 2; rerun the "
                                                "latency_table stage"):
        prune.run(load_params(other.params), other, RATIO)
    write_params(other, unit="params")  # the stage under another unit: an empty table, and prune refuses it
    latency_table.run(load_params(other.params), other)
    assert json.loads(other.latency_table_meta.read_text()) == {"unit": "params", "measured": False}
    write_params(other)
    with pytest.raises(MissingInputError, match="the table was not measured"):
        prune.run(load_params(other.params), other, RATIO)
    assert read_meta(layout.teacher / MODEL_FILE) == read_meta(other.teacher / MODEL_FILE)


def test_netadapt_removes_the_blocks_it_may_and_the_network_runs(layout, tmp_path):
    """The sensitivity stage writes each block's drop; where the drops say a block costs nothing,
    netadapt's plans remove as many as prune.max_blocks_removed allows (at 0 none), the stage's
    measured plan removes blocks within the target, and retrain accepts the plan it re-derives.
    DEEP asks for more than the two blocks save, so that width steps (fine ones) meet the target
    after them."""
    other = copied(layout, tmp_path)
    write_params(other, ratios=[DEEP], schedule="netadapt", max_blocks_removed=2, sensitivity_ratios=[0.5])
    params = load_params(other.params)
    sensitivity.run(params, other)
    drops = pd.read_csv(other.block_drops)
    teacher, _ = load_model(other.teacher / MODEL_FILE)
    assert drops["index"].tolist() == teacher.removable() and drops["drop"].notna().all()
    # blocks that cost no accuracy, and filters that do (an untrained teacher loses none to either)
    drops.assign(drop=0.0).to_csv(other.block_drops, index=False)
    curves = pd.read_csv(other.curves)
    curves.assign(drop=100 * curves["ratio"]).to_csv(other.curves, index=False)
    deep, figures = pruned_at_reachable(other, DEEP, other, schedule="netadapt", max_blocks_removed=2,
                                        sensitivity_ratios=[0.5])
    params = load_params(other.params)
    model, meta = load_model(other.pruned(deep) / MODEL_FILE)
    # the plan the measured search settles on removes blocks, as its figures say; how many (one or
    # both) can turn on a few microseconds of a loaded machine's timing, so the count is held below
    # on the table, where it is decided
    assert figures["blocks_removed"] == model.channels().count(0) >= 1
    assert abs(figures["latency_removed"] - deep) <= LATENCY_TOLERANCE * (1 - deep)
    assert (other.pruned(deep) / "model.onnx").is_file()
    assert model.channels() == plans.pruned_channels(teacher, deep, params, other, meta)
    assert retrain.run(params, other, deep, "ft", 0)["top1"] >= 0
    assert latency_budgets(other, [deep])["blocks removed"].item() == figures["blocks_removed"]
    # on the table: the plans for DEEP and beyond remove blocks, more (never fewer) the deeper they
    # go, and the search's last removes both blocks allowed; at 0 no plan on it removes a block.
    # (Whether DEEP's own plan removes one block or two turns on the table's few microseconds per
    # block, timed on this machine: one run here read 1, 2, 2 where others read 2, 2, 2.)
    table = read_latency_table(other, teacher)[0]
    full = table.predict(teacher.channels())
    for allowed, kept, fewest in [(2, (1 - DEEP, 0.3, float("-inf")), 1), (0, (0.9, 0.6, 0.45, 0.3, float("-inf")), 0)]:
        write_params(other, ratios=[DEEP], schedule="netadapt", max_blocks_removed=allowed, sensitivity_ratios=[0.5])
        planner = plans.latency_planner(teacher, load_params(other.params), table, pd.read_csv(other.curves),
                                        pd.read_csv(other.block_drops))
        removed = [planner(full * k)[0].count(0) for k in kept]
        assert removed == sorted(removed) and fewest <= removed[0] and removed[-1] == allowed, (allowed, removed)
    drops.iloc[1:].to_csv(other.block_drops, index=False)  # a table that misses a block: another network's
    write_params(other, ratios=[DEEP], schedule="netadapt", max_blocks_removed=2, sensitivity_ratios=[0.5])
    with pytest.raises(CorruptInputError, match="blocks.csv: made for another network"):
        prune.run(load_params(other.params), other, DEEP)
