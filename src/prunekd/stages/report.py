"""report: results.csv, summary.csv, report.md and figures from every run's metrics."""

from __future__ import annotations

from pathlib import Path

from ..config import Params
from ..paths import REPORTS
from ..report import collect, markdown, plot_accuracy, summarize
from ..tracking import stage_run
from .common import run_cli

FIGURE = "figures/accuracy_vs_ratio.png"


def run(params: Params, out: Path = REPORTS) -> dict:
    results = collect(params.prune.ratios, params.retrain.modes, params.retrain.seeds)
    summary = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    teacher_top1 = float(results.loc[results["mode"] == "teacher", "top1"].iloc[0])
    plot_accuracy(summary, teacher_top1, out / FIGURE)
    results.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(markdown(results, summary, FIGURE))
    with stage_run("report", params) as run:
        for name in ("results.csv", "summary.csv", "report.md", "figures"):
            run.log_artifact(out / name, "report")
    print((out / "report.md").read_text())
    return {"runs": len(results) - 1, "teacher_top1": teacher_top1}


def main(argv: list[str] | None = None) -> int:
    return run_cli("report", argv, lambda args, params: run(params), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
