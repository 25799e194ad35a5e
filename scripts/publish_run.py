"""Keep a run's results beside the code: copy reports/ into docs/runs/<name>/.

    python scripts/publish_run.py all-modes "dvc exp run -S 'retrain.modes=[ft,kd,scratch,scratch_kd]'"

For runs other than the default one (whose results stay in reports/, tracked by DVC): after
`dvc exp run -S ...`, this keeps its report, tables, figures and params under git, with the
command that made them, and `python scripts/update_readme.py` fills README blocks
``<!-- run:<name>:begin -->`` ... ``<!-- run:<name>:end -->`` from them. It keeps each retrained
model's result on every test image too (``correct/<ratio>-<mode>-<seed>.npy``, bit-packed, about
1 kB each), so that two published runs can be compared image by image (scripts/pair_runs.py), and
each pruned network's figures and layer widths (``pruned/<ratio>.json``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from prunekd.errors import refuse

ROOT = Path(__file__).resolve().parents[1]


CORRECT = "correct"  # docs/runs/<name>/correct/<model folder>.npy
IMAGES = "images.json"  # beside them: how many test images each holds


def save_correct(root: Path, out: Path) -> None:
    """Each retrained model's right (1) or wrong (0) on every test image, in test-set order, as
    ``np.packbits`` of its predictions against the prepared test labels."""
    import numpy as np
    import pandas as pd

    from prunekd.data import load_prepared
    from prunekd.paths import PREDICTIONS_FILE, Layout

    layout = Layout(root)
    runs = pd.read_csv(layout.results)
    runs = runs[runs["mode"] != "teacher"]  # this run's models only: the workspace may hold others
    if runs.empty:
        return
    labels = load_prepared(layout.prepared).test.y.numpy()
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGES).write_text(json.dumps({"images": len(labels)}) + "\n")  # packbits pads to a byte
    for run in runs.itertuples():
        folder = layout.retrained(run.ratio, run.mode, int(run.seed))
        right = np.load(folder / PREDICTIONS_FILE, allow_pickle=False) == labels
        np.save(out / f"{folder.name}.npy", np.packbits(right), allow_pickle=False)


PRUNED = "pruned"  # docs/runs/<name>/pruned/<ratio>.json


def save_pruned(root: Path, out: Path) -> None:
    """Each pruned network's figures (its metrics.json: params, MACs, and under prune.unit latency
    the plan's budget and measured times) with its layer widths, one file per ratio."""
    import yaml

    from prunekd.models import load_model
    from prunekd.paths import METRICS_FILE, MODEL_FILE, Layout, ratio_key

    layout = Layout(root)
    ratios = yaml.safe_load((root / "params.yaml").read_text())["prune"]["ratios"]
    for ratio in ratios:
        folder = layout.pruned(ratio)
        if not (folder / METRICS_FILE).is_file():
            continue
        figures = json.loads((folder / METRICS_FILE).read_text())
        figures["widths"] = load_model(folder / MODEL_FILE)[0].channels()
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{ratio_key(ratio)}.json").write_text(json.dumps(figures, indent=2) + "\n")


def publish(name: str, command: str) -> Path:
    """Copy this checkout's reports/ (and each model's per-image results, each pruned network's
    figures) into docs/runs/<name>/, with ``command`` and the commit, whole or not at all: built in
    a scratch folder that replaces the run's folder only once complete (prunekd.io's
    ``stage_outputs``), so a failure leaves what was published before as it was."""
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_runs import head_commit, run_folder

    from prunekd.io import stage_outputs

    reports, out = ROOT / "reports", run_folder(ROOT / "docs" / "runs", name)
    missing = [p for p in ("report.md", "results.csv", "summary.csv", "figures") if not (reports / p).exists()]
    if missing:
        refuse(f"reports/{missing[0]} not found: run `dvc repro` (or `dvc exp run`) first")
    try:
        if not shlex.split(command):
            refuse("the command that made the run is empty: give it as it was typed (e.g. \"dvc exp run -S ...\")")
    except ValueError as exc:
        refuse(f"the command {command!r} does not split into words as a shell would ({exc}); give it as it was typed")
    commit = head_commit(ROOT)
    with stage_outputs(out, root=ROOT) as scratch:
        tmp = scratch / out.name
        shutil.copytree(reports / "figures", tmp / "figures")
        for file in ("report.md", "results.csv", "summary.csv", "latency.csv", "metrics.json"):
            if (reports / file).exists():  # latency.csv, metrics.json: older runs have none
                shutil.copy2(reports / file, tmp / file)
        if (reports / "sensitivity").exists():
            shutil.copytree(reports / "sensitivity", tmp / "sensitivity")
        shutil.copy2(ROOT / "params.yaml", tmp / "params.yaml")
        save_correct(ROOT, tmp / CORRECT)
        save_pruned(ROOT, tmp / PRUNED)
        (tmp / "run.json").write_text(json.dumps(
            {"command": command, "commit": commit, "published": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            indent=2) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        refuse(f"usage: {__doc__.splitlines()[2].strip()}")
    print(f"published to {publish(sys.argv[1], sys.argv[2]).relative_to(ROOT)}")
