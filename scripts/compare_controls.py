"""The controls of a published regime in one table: what each run changed, and what each mode did
to the pruned network (mode - none) and KD - FT, each with its 95 % interval.

    python scripts/compare_controls.py controls headroom ctl-ft-best ctl-ft-lr0.002 ...

Reads docs/runs/<name>/{run.json,metrics.json} (scripts/publish_run.py; the first name is the
regime the others change one thing of) and writes docs/runs/<out>/report.md and run.json;
`python scripts/update_readme.py` copies it into a README block <!-- run:<out>:begin -->.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from prunekd.report import fmt_table

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"
COLUMNS = [("ft_minus_none", "FT − none"), ("kd_minus_none", "KD − none"), ("kd_minus_ft", "KD − FT")]


def overrides(name: str) -> list[str]:
    """The run's ``-S`` items, from the command it was made with."""
    words = shlex.split(json.loads((RUNS / name / "run.json").read_text())["command"])
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]


def read(name: str) -> dict[str, float]:
    path = RUNS / name / "metrics.json"
    if not path.is_file():
        sys.exit(f"compare_controls: {path.relative_to(ROOT)} not found: publish that run (scripts/publish_run.py)")
    return json.loads(path.read_text())


def cell(metrics: dict[str, float], key: str) -> str:
    if key not in metrics:
        return ""
    half = metrics.get(f"{key}_ci95")
    diff = metrics[key]
    return f"{diff:+.2f}" if half is None else f"{diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}]"


def top1(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.2f}" if key in metrics else ""  # a mode the run left out: an empty cell


def rows(names: list[str]) -> pd.DataFrame:
    base = set(overrides(names[0]))
    out = []
    for name in names:
        metrics, changed = read(name), [o for o in overrides(name) if o not in base]
        ratios = sorted({k.rsplit("_", 1)[1] for k in metrics if k.startswith("top1_none_")}, key=float)
        for ratio in ratios:
            out.append({"run": name, "changes": ", ".join(f"`{c}`" for c in changed) or "(the regime)",
                        "params removed %": metrics.get(f"params_removed_{ratio}"),
                        "no retraining": metrics.get(f"top1_none_{ratio}"),
                        "FT": top1(metrics, f"top1_ft_{ratio}"), "KD": top1(metrics, f"top1_kd_{ratio}"),
                        **{label: cell(metrics, f"{key}_{ratio}") for key, label in COLUMNS}})
    return pd.DataFrame(out)


def compare(names: list[str]) -> str:
    command = json.loads((RUNS / names[0] / "run.json").read_text())["command"]
    return "\n".join([
        "# Controls compared", "",
        f"## Compared: one change at a time to `{names[0]}`", "",
        f"Every run is `{command}` with the changes listed. `none`: the pruned network with no retraining, "
        "the same for every run of one ratio and teacher. Intervals: 95 %, over retraining seeds and test "
        "images (each run's report has the rest).", "",
        fmt_table(rows(names)), ""])


def main(out: str, names: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_runs import publish

    publish(RUNS, out, names, compare(names), " ".join(["python scripts/compare_controls.py", out, *names]))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(f"usage: {__doc__.splitlines()[3].strip()}")
    main(sys.argv[1], sys.argv[2:])
