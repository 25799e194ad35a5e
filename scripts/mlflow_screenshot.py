"""A screenshot of what MLflow's UI shows first for this project: the report run's page, which
opens on the answer (its description), for the README.

    python scripts/mlflow_screenshot.py [docs/img/mlflow-report-run.png]

Starts a real `mlflow server` on 127.0.0.1 over the project's store (./mlflow.db, after `dvc
repro`) and takes the picture with headless Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    from mlflow.tracking import MlflowClient

    from prunekd.paths import Layout
    from prunekd.tracking import EXPERIMENT, server

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("mlflow_screenshot: no Chromium found (Debian: apt-get install chromium)")
    layout = Layout(ROOT)
    if not layout.store.is_file():
        sys.exit(f"mlflow_screenshot: {layout.store} not found: run `dvc repro` first")
    store = f"sqlite:///{layout.store}"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    [report] = client.search_runs([experiment.experiment_id], "tags.`prunekd.stage` = 'report'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    with server(store, layout.artifacts, proxy=False) as uri:
        page = f"{uri}/#/experiments/{experiment.experiment_id}/runs/{report.info.run_id}"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1000", "--virtual-time-budget=15000", f"--screenshot={out}", page],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {out} ({page})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "mlflow-report-run.png")
