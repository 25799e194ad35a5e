"""``prunekd runs``: a sweep read back from MLflow, as a ratio x mode table.

The same numbers as ``reports/summary.csv``, but from the tracking store, so it works on any
machine that can reach the team's MLflow server, with no checkout of the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .constants import TRACKING_ENV
from .report import fmt_table
from .tracking import TrackingError, check_reachable, enabled, tracking_uri


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (ratio, mode): n, top-1 mean and std over seeds, and mean cost."""
    grouped = runs.groupby(["ratio", "mode"], sort=True)
    table = grouped["test_top1"].agg(n="count", top1="mean", top1_std="std")
    costs = grouped[["params", "macs", "size_mb", *[c for c in runs.columns if c.startswith("ms ")]]].mean()
    costs["macs"] = costs["macs"] / 1e6
    return table.join(costs.rename(columns={"macs": "MMACs"})).reset_index()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prunekd runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="latest",
                   help="'latest' (the newest report run's sweep, default), a report run id, or 'all'")
    p.add_argument("--each", action="store_true", help="one row per run (with run ids) instead of the summary")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: prunekd)")
    args = p.parse_args(argv)
    try:
        if not enabled():
            raise TrackingError(f"{TRACKING_ENV}=off: tracking is off, so there is no store to list runs from; unset "
                                "it (the runs made while it was off were not recorded)")
        uri = check_reachable()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise TrackingError(f"no tracking store at {uri}: run `dvc repro` here first, or set "
                                "MLFLOW_TRACKING_URI to the team's server")
        from .tracking import sweep_runs  # MLflow: after the checks that say, in one line, if it is missing

        runs = sweep_runs(args.sweep, args.experiment)
    except TrackingError as exc:
        print(f"prunekd runs: error: {exc}", file=sys.stderr)
        return 2
    if runs.empty:
        print(f"prunekd runs: no retrain runs for sweep {args.sweep!r} at {tracking_uri()}", file=sys.stderr)
        return 1
    table = runs.sort_values(["ratio", "mode", "seed"]) if args.each else summary(runs)
    print(f"{len(runs)} retrain runs from {tracking_uri()} (sweep {args.sweep})\n")
    print(fmt_table(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
