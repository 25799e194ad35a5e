"""Re-render the answer of a run published before prunekd kept per-image predictions in its
publication, from its results.csv, with the current report code:

    python scripts/rerender_answer.py headroom

Rewrites the "## The answer" section of docs/runs/<name>/report.md (the rest stays as published)
and says so in it. Its intervals cover the retraining seeds only: the per-image predictions that
the test set's part of an interval needs were not kept with the run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from prunekd.config import read_yaml
from prunekd.errors import refuse
from prunekd.report import answer_section, summarize

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import head_commit, run_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"


def rerender(name: str) -> str:
    folder = RUNS / name
    results = pd.read_csv(folder / "results.csv")
    retrain = read_yaml((folder / "params.yaml").read_text(), "params.yaml")["retrain"]
    regime = {"train_subset": retrain.get("train_subset"), "epochs": retrain["epochs"], "lr": retrain["lr"],
              "keep": retrain.get("keep", "last"), "n_seeds": len(retrain["seeds"])}
    commit = head_commit(ROOT)
    answer = "\n".join(answer_section(results, summarize(results), regime))
    note = (f"*Re-rendered at commit {commit} from this run's results.csv by `scripts/rerender_answer.py`: "
            "the run's per-image predictions were not kept, so these intervals cover the retraining seeds only.*")
    return answer.replace("\n\n", f"\n\n{note}\n\n", 1)


def main(name: str) -> None:
    folder = run_folder(RUNS, name)  # a plain name: no path out of docs/runs
    missing = [f for f in ("report.md", "results.csv", "params.yaml") if not (folder / f).is_file()]
    if missing:
        refuse(f"{(folder / missing[0]).relative_to(ROOT)} not found: {name!r} is no published run "
               "(scripts/publish_run.py)")
    path = folder / "report.md"
    report = path.read_text()
    parts = re.split(r"\n(?=## )", report)
    at = next((i for i, p in enumerate(parts) if p.startswith("## The answer")), None)
    if at is None:
        refuse(f"{path.relative_to(ROOT)} has no answer section")
    kept = parts[at][parts[at].find("\n!["):] if "\n![" in parts[at] else ""  # its figure and teacher line
    parts[at] = rerender(name).rstrip() + "\n" + kept
    path.write_text("\n".join(parts))
    print(f"rewrote the answer of {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        refuse(f"usage: {__doc__.splitlines()[3].strip()}")
    main(sys.argv[1])
