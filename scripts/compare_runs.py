"""Compare published runs that differ in how they prune (criterion, schedule): one table.

    python scripts/compare_runs.py criteria crit-l1 crit-random crit-fpgm sched-sensitivity

Reads docs/runs/<name>/{results.csv,params.yaml} (scripts/publish_run.py) and writes
docs/runs/<out>/report.md: per run, ratio and mode, top-1 before and after retraining (mean,
std, n over seeds), and each run minus the first, paired by seed with a 95 % t interval;
`python scripts/update_readme.py` copies it into a README block <!-- run:<out>:begin -->.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from prunekd.errors import refuse
from prunekd.io import stage_outputs
from prunekd.report import fmt_table, paired_difference, primary

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"


def label(name: str) -> str:
    params = yaml.safe_load((RUNS / name / "params.yaml").read_text())["prune"]
    unit = "" if params.get("unit", "params") == "params" else f", equal {params['unit']}"
    return f"{params['criterion']}, {params['schedule']}{unit}"


def load(names: list[str]) -> pd.DataFrame:
    """Every run's retrain rows, with the run's label standing in for the mode it compares."""
    frames = []
    for name in names:
        published(RUNS, [name], "results.csv")
        df = pd.read_csv(RUNS / name / "results.csv")
        frames.append(df[df["mode"] != "teacher"].assign(run=label(name)))
    labels = [frame["run"].iloc[0] for frame in frames]
    if len(set(labels)) < len(labels):
        refuse(f"runs share a criterion and schedule ({', '.join(labels)}); "
               "compare runs that differ in one of them")
    return pd.concat(frames, ignore_index=True)


def compare(names: list[str]) -> str:
    runs = load(names)
    runs = runs[runs.groupby(["ratio", "mode"])["run"].transform("nunique") == len(names)]  # shared cells only
    table = (runs.groupby(["ratio", "mode", "run"], sort=False)
             .agg(params_removed_pct=("params_reduction_pct", "mean"), MMACs=("macs", "mean"),
                  latency_ms=("latency_ms", "mean"), top1_pruned=("top1_pruned", "mean"),
                  top1=("top1", "mean"), top1_std=("top1", "std"), n=("top1", "count"))
             .reset_index().sort_values(["ratio", "mode"], kind="stable"))
    table["MMACs"] = table["MMACs"] / 1e6
    first = label(names[0])
    diffs = []
    for mode, rows in runs.groupby("mode"):
        for other in dict.fromkeys(rows["run"]):
            if other != first:
                paired = paired_difference(rows.assign(mode=rows["run"]), other, first)
                diffs.append(paired.assign(mode=mode, comparison=f"({other}) - ({first})"))
    diff_table = pd.concat(diffs, ignore_index=True)[["comparison", "mode", "ratio", "n", "diff", "ci_low",
                                                      "ci_high", "excludes_zero"]] if diffs else pd.DataFrame()
    return "\n".join(["# Pruning criteria and schedules compared", "",
                      "## Compared: top-1 % per criterion and schedule (mean over seeds)", "",
                      "`top1_pruned`: before retraining; `top1`: after. Cost beside accuracy: a schedule that "
                      "keeps the same parameters may keep more MACs; `latency_ms` as each run measured it "
                      "(runs published before the latency stage timed each model in eager PyTorch, a noisy "
                      "figure).", "", fmt_table(table), "",
                      f"## Compared: each minus ({first}), paired over seeds (95 % CI, paired t)", "",
                      fmt_table(diff_table), ""])


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def run_folder(runs: Path, name: str) -> Path:
    """``runs/<name>``, where a published run or comparison is written, refused (one line, exit 2)
    unless ``name`` is one plain name: no path can lead out of ``runs`` or be ``runs`` itself."""
    if not RUN_NAME.fullmatch(name):
        refuse(f"run name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit")
    return runs / name


def published(runs: Path, names: list[str], *files: str) -> None:
    """Refuse (one line, exit 2) a name in ``names`` that is no run published in ``runs`` with each
    of ``files``, before a comparison reads any ("default": the reports of this checkout's run)."""
    for name in names:
        where = run_files(runs, name)
        shown = "reports" if name == "default" else f"docs/runs/{name}"
        for file in files:
            if not (where / file).exists():
                refuse(f"{shown}/{file} not found: publish that run first (scripts/publish_run.py)")


def run_files(runs: Path, name: str) -> Path:
    """Where a run's results are: ``runs/<name>``, or for ``default`` this checkout's reports/."""
    return runs.parents[1] / "reports" if name == "default" else run_folder(runs, name)


def run_params(runs: Path, name: str) -> dict:
    """The params a run was made with: its published params.yaml, or for ``default`` this checkout's."""
    return yaml.safe_load(((runs.parents[1] if name == "default" else run_folder(runs, name)) / "params.yaml").read_text())


def headline_latency(runs: Path, name: str) -> pd.DataFrame:
    """A run's latency table cut to its headline figure per ratio (index): the first runtime's fp32
    forms at the first batch size (``prunekd.report.primary``); a table from before the int8 forms
    were timed is all fp32."""
    latency = pd.read_csv(run_files(runs, name) / "latency.csv")
    if "precision" not in latency:
        latency = latency.assign(precision="fp32")
    return primary(latency).set_index("ratio")


def interval(metrics: dict, key: str, minus: str = "-") -> str | None:
    """``key`` of a run's metrics.json as ``+d.dd [lo, hi]``, with its 95 % interval (``<key>_ci95``),
    or ``+d.dd`` where the run has none; None where it has no ``key``. ``minus``: the sign written."""
    if key not in metrics:
        return None
    diff, half = metrics[key], metrics.get(f"{key}_ci95")
    text = f"{diff:+.2f}" if half is None else f"{diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}]"
    return text.replace("-", minus)


def record(runs: Path, name: str, key: str) -> str:
    """``key`` (``command``, ``commit``) of the run.json of ``runs/<name>``, refused (one line, exit
    2) where the file is no JSON object with that text, or where a command would not split into
    words as a shell splits it."""
    path = run_folder(runs, name) / "run.json"
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError) as exc:
        refuse(f"docs/runs/{name}/run.json: cannot be read as a run's record ({type(exc).__name__}); publish the "
               "run again (scripts/publish_run.py)")
    if not isinstance(value, str) or not value:
        refuse(f"docs/runs/{name}/run.json: no {key!r}; publish the run again (scripts/publish_run.py)")
    if key == "command":
        try:
            shlex.split(value)
        except ValueError as exc:
            refuse(f"docs/runs/{name}/run.json: its command {value!r} does not split into words ({exc})")
    return value


def head_commit(root: Path) -> str:
    """The checkout's commit, short (what a published run or re-rendered answer is stamped with)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        refuse(f"{root}: git cannot name the commit checked out ({type(exc).__name__}); publish from a git checkout")


CURRENT_INTERVAL = "a4d93a6"  # from this commit on, a report's interval over seeds and test images is stats.crossed's


def earlier_interval(runs: Path, name: str) -> bool:
    """Whether the published run ``name`` was made before ``CURRENT_INTERVAL``: its report's
    intervals over seeds and test images are then the earlier form (summed variances on seeds - 1
    degrees of freedom), which erred wide. A commit git does not know counts as earlier."""
    try:
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", CURRENT_INTERVAL, record(runs, name, "commit")],
                                  cwd=runs, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        refuse(f"git could not say which commits came before {CURRENT_INTERVAL} ({type(exc).__name__}: {exc})")
    return ancestor.returncode != 0


EARLIER_MARK = " †"


def earlier_note() -> str:
    """The line under a table that marks runs with ``EARLIER_MARK``."""
    return (f"†: published before commit {CURRENT_INTERVAL}, so its intervals are the earlier form over seeds and "
            "test images, which erred wide: a difference it finds stands, a \"no detectable difference\" may be "
            "its width (docs/results.md, *How to read the intervals*).")


@contextmanager
def written(runs: Path, out: str, names: list[str], command: str) -> Iterator[Path]:
    """The folder of a comparison of published runs, ``runs/<out>/``, made whole or not at all: the
    block writes its report.md and figures into the folder it is given, a scratch one; then a
    run.json naming ``command`` and the runs' commits (what update_readme.py shows above its
    block) is added, and the folder replaces ``runs/<out>``. A block that fails or is stopped
    leaves the published folder as it was (prunekd.io's ``stage_outputs``, as a stage's outputs)."""
    folder = run_folder(runs, out)
    commits = sorted({record(runs, n, "commit") for n in names})
    with stage_outputs(folder, root=runs.parents[1]) as scratch:
        made = scratch / folder.name
        made.mkdir()
        yield made
        (made / "run.json").write_text(json.dumps({"command": command, "commit": ", ".join(commits), "runs": names},
                                                  indent=2) + "\n")
    print(f"wrote {folder / 'report.md'}")


def main(out: str, names: list[str]) -> None:
    published(RUNS, names, "results.csv", "params.yaml", "run.json")
    with written(RUNS, out, names, shlex.join(["python", "scripts/compare_runs.py", out, *names])) as folder:
        (folder / "report.md").write_text(compare(names))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        refuse(f"usage: {__doc__.splitlines()[2].strip()}")
    main(sys.argv[1], sys.argv[2:])
