"""Screenshots of MLflow's UI on this project's store, for the README: the experiment's runs table,
whose first row is the latest sweep's report run with the answer's metrics as columns, that
report run's page, which opens on the answer (its description), and the comparison view the report
stage saves (test top-1 against params, grouped by mode and ratio).

    python scripts/mlflow_screenshot.py [--store mlflow.db] [--out docs/img] [--no-check]

It starts a real `mlflow server` on 127.0.0.1 over a copy of the store (./mlflow.db after `dvc
repro`; the original is only read) and takes the pictures with headless Chromium (Debian: apt-get
install chromium). Unless --no-check, it then fails, leaving the pictures in --out as they were,
unless the pages, as the browser rendered them, show the project's experiment in MLflow's
model-training view, the report run first in the runs table with its answer's metrics, the run
page the report run's description, and the comparison view its scatter chart of the retrain runs'
groups.

MLflow 3.17's UI opens the GenAI view in a fresh browser whatever the experiment's kind tag says
(the view is a browser-wide toggle): the pages are opened with ?workflowType=machine_learning
(tracking.ui_url). The runs table's columns come from a view shared the way MLflow's UI shares one
(an experiment tag that ?viewStateShareKey= names), set in the copy.

A store written before report runs carried their answer (description, summary metrics) gets them,
in the copy, from the run's own logged report/ (report.md, metrics.json), as the report stage
logs them now; the script says so.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.tracking import MlflowClient

from prunekd.errors import refuse
from prunekd.stages.report import run_description
from prunekd.tracking import (COMPARE_VIEW, EXPERIMENT, EXPERIMENT_TAGS, TrackingError, comparison_view, free_port,
                              server, ui_url)

ROOT = Path(__file__).resolve().parents[1]

RUNS_PNG, RUN_PNG, COMPARE_PNG = "mlflow-runs.png", "mlflow-report-run.png", "mlflow-compare.png"
WINDOW = "1800,1100"
# The browser reaches the server (on 127.0.0.1) by this name: on a page served from localhost or
# 127.0.0.1, MLflow's UI opens its chat assistant over a quarter of the screen on a browser's first
# visit, and a headless browser's every visit is its first. `.localhost` never leaves the machine.
HOST = "prunekd.localhost"
PAGE_BUDGET_MS = 15_000  # virtual time a page gets to draw (it does not pass while a request is pending)
# The comparison view's chart draws after its runs arrive, late in virtual time: it lacked its x
# axis at 15 s and 30 s and drew at 60 s, on an idle machine as with two threads of other work
# beside it. A try takes 2 to 5 s of real time whatever its budget, so the page gets 60 s, then
# twice that, while the chart is missing.
COMPARE_SCALES = (4, 8, 16, 32)  # its budgets, in PAGE_BUDGET_MS
BROWSER_TIMEOUT = 150  # seconds for one page, on a busy machine (it takes 5 to 35)
VIEW = "prunekd-answer"  # the runs table's view: the answer's metrics as columns
# What only the GenAI view shows: its sidebar and the run page's breadcrumb.
GENAI_MARKERS = ("Judges", "Agent versions", "Evaluations")


class ScreenshotError(RuntimeError):
    """The pictures cannot be taken, or do not show what they should."""


@dataclass(frozen=True)
class Shots:
    runs_png: Path  # the experiment's runs table, the answer's metrics as columns
    run_png: Path  # the latest report run's page
    compare_png: Path  # the comparison view
    runs_url: str  # each page's address on the server: /#/experiments/...
    run_url: str
    compare_url: str
    runs_text: str  # each page's text as Chromium rendered it
    run_text: str
    compare_text: str
    experiment: str
    run_id: str  # the report run's
    description: str  # the report run's, Markdown
    columns: dict[str, float]  # the answer's metrics the runs table shows, as the report run logged them
    description_cut: bool  # the run page shows only the description's first 150 px ("Show more")
    filled_in: tuple[str, ...]  # what the copy of the store got that the store lacked


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        raise ScreenshotError("no Chromium found on PATH (Debian: apt-get install chromium; ./setup.sh installs it)")
    return found


def copy_store(store: Path, dest: Path) -> Path:
    """A consistent copy of the SQLite ``store`` (a stage may be writing to it) at ``dest``."""
    if not store.is_file():
        raise ScreenshotError(f"{store} not found: run `dvc repro` first")
    try:
        with closing(sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as src, \
                closing(sqlite3.connect(dest)) as copy:
            src.backup(copy)
    except sqlite3.DatabaseError as exc:
        raise ScreenshotError(f"--store {store}: not a usable SQLite MLflow store ({exc})") from None
    return dest


def latest_report(client: MlflowClient, experiment_id: str):
    found = client.search_runs([experiment_id], "tags.`prunekd.stage` = 'report' and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise ScreenshotError("no finished report run in the store: run `dvc repro` first")
    return found[0]


def fill_in(client: MlflowClient, experiment, report) -> list[str]:
    """Give an older store's experiment and report run what the pipeline logs today."""
    done = []
    missing = {k: v for k, v in EXPERIMENT_TAGS.items() if k not in experiment.tags}
    for key, value in missing.items():
        client.set_experiment_tag(experiment.experiment_id, key, value)
    view = f"mlflow.sharedViewState.{COMPARE_VIEW}"
    if view not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, view, json.dumps(comparison_view()))
        missing[view] = ""
    if missing:
        done.append(f"experiment tags {', '.join(missing)}")
    run_id = report.info.run_id
    if "mlflow.note.content" not in report.data.tags:
        with tempfile.TemporaryDirectory() as tmp:
            markdown = Path(client.download_artifacts(run_id, "report/report.md", tmp)).read_text()
        client.set_tag(run_id, "mlflow.note.content", run_description(markdown))
        done.append("the report run's description, from its report/report.md")
    with tempfile.TemporaryDirectory() as tmp:
        flat = json.loads(Path(client.download_artifacts(run_id, "report/metrics.json", tmp)).read_text())
    absent = {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and k not in report.data.metrics}
    for key, value in absent.items():
        client.log_metric(run_id, key, value)
    if absent:
        done.append(f"the report run's {len(absent)} summary metrics, from its report/metrics.json")
    return done


@contextmanager
def environ(**values: str):
    """``values`` in os.environ for the block (what a server started in it inherits)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def ui_server(store_uri: str, artifacts: Path):
    """A real `mlflow server` on 127.0.0.1 over ``store_uri`` that also answers to HOST; yields its
    URI by that name."""
    port = free_port()
    named = f"{HOST}:{port}"
    # MLflow's server refuses Host headers, and API calls from origins, other than localhost's
    with environ(MLFLOW_SERVER_ALLOWED_HOSTS=f"127.0.0.1:{port},{named}",
                 MLFLOW_SERVER_CORS_ALLOWED_ORIGINS=f"http://{named}"), \
            server(store_uri, artifacts, proxy=False, port=port):
        yield f"http://{named}"


def answer_columns(metrics: dict[str, float]) -> list[str]:
    """The report run's answer metrics: the teacher, then per ratio (params removed %) FT, KD and
    KD - FT."""
    ratios = sorted({int(m.group(1)) for k in metrics if (m := re.fullmatch(r"kd_minus_ft_(\d+)", k))})
    keys = ["teacher_top1", *(f"{what}_{r}" for r in ratios for what in ("top1_ft", "top1_kd", "kd_minus_ft"))]
    return [k for k in keys if k in metrics]


def add_view(client: MlflowClient, experiment_id: str, metrics: list[str]) -> None:
    """A runs-table view that shows ``metrics`` as columns, in that order, as MLflow's UI shares
    one: an experiment tag mlflow.sharedViewState.<key> that ?viewStateShareKey=<key> opens."""
    columns = [f"metrics.`{key}`" for key in metrics]
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW}",
                              json.dumps({"selectedColumns": columns, "columnOrder": columns}))


def chromium(url: str, png: Path, tries: int = 2, budget_ms: int = PAGE_BUDGET_MS) -> str:
    """Open ``url`` in headless Chromium, write a screenshot of it to ``png`` and return its DOM,
    both as the page stood when its (virtual) time budget of ``budget_ms`` ran out. A browser that
    hangs is killed, with its children, and tried once more."""
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--host-resolver-rules=MAP {HOST} 127.0.0.1", f"--window-size={WINDOW}",
           f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", "--dump-dom", url]
    for _ in range(tries):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            dom, err = proc.communicate(timeout=BROWSER_TIMEOUT)
            break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    else:
        raise ScreenshotError(f"Chromium did not finish {url} within {BROWSER_TIMEOUT} s, {tries} times")
    if proc.returncode != 0 or not (png.is_file() and png.stat().st_size):
        raise ScreenshotError(f"Chromium failed on {url} (exit {proc.returncode}): {err[-1500:]}")
    return dom


def page_text(dom: str) -> str:
    """The visible text of a DOM dump: no scripts or styles, no tags, one space between words."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def answer_lines(description: str) -> list[str]:
    """What the run page must show of the description, as text: its heading, the first row of
    its table and its bullet points."""
    lines = [line.strip() for line in description.splitlines() if line.strip()]
    rows = [line for line in lines if line.startswith("|") and re.search(r"\d", line) and "---" not in line]
    bullets = [line[2:] for line in lines if line.startswith("- ")]
    shown = [lines[0].lstrip("#"), *rows[:1], *bullets] if lines else []
    return [" ".join(re.sub(r"[*`|]", " ", line).split()) for line in shown]


def js_number(value: float) -> str:
    """``value`` as the UI's JavaScript prints it (a whole number without '.0')."""
    return str(int(value)) if value.is_integer() else repr(value)


def first_run_name(runs_text: str) -> str | None:
    """The run name in the runs table's first row (each row's name follows its pin button)."""
    found = re.search(r"Pin run #[0-9a-f]{6} (\S+)", runs_text)
    return found.group(1) if found else None


def compare_problems(text: str) -> list[str]:
    """What the comparison view's page lacks: its chart's section, axes and grouping."""
    wanted = {"the chart's section": "Accuracy against size", "the x axis": "params", "the y axis": "test_top1",
              "the grouping by mode": "mode", "the grouping by ratio": "ratio"}
    genai = [m for m in GENAI_MARKERS if m in text]
    return ([f"the comparison view lacks {what} ({shown!r})" for what, shown in wanted.items() if shown not in text]
            + ([f"the comparison view is MLflow's GenAI view (it shows {', '.join(genai)})"] if genai else []))


def check(shots: Shots) -> None:
    """Fail unless both pages show the experiment in the model-training view, the runs table the
    report run's answer metrics, and the run page the report run's description."""
    problems = []
    for name, text in (("runs table", shots.runs_text), ("report run page", shots.run_text)):
        if shots.experiment not in text:
            problems.append(f"the {name} does not name the experiment {shots.experiment!r}")
        genai = [m for m in GENAI_MARKERS if m in text]
        if genai:
            problems.append(f"the {name} is MLflow's GenAI view (it shows {', '.join(genai)})")
    if not shots.columns:
        problems.append("the report run has no answer metrics (teacher_top1, top1_ft_<r>, ...)")
    missing = [key for key in shots.columns if key not in shots.runs_text]
    if missing:
        problems.append(f"the runs table has no column {', '.join(missing)}")
    if first_run_name(shots.runs_text) != "report":
        problems.append(f"the runs table's first row is {first_run_name(shots.runs_text)!r}, not the report run")
    row = " ".join(map(js_number, shots.columns.values()))
    if row not in shots.runs_text:
        problems.append(f"the runs table does not show the report run's answer metrics ({row})")
    if not shots.description:
        problems.append("the report run has no description")
    for line in answer_lines(shots.description):
        if line not in shots.run_text:
            problems.append(f"the report run page does not show its description's {line[:80]!r}")
    problems += compare_problems(shots.compare_text)
    if problems:
        raise ScreenshotError("; ".join(problems) + f" (pages: {shots.runs_url}, {shots.run_url}, {shots.compare_url})")


def moved(shots: Shots, out: Path) -> Shots:
    """``shots`` with its pictures moved into ``out``, each replacing its namesake there in one step."""
    out.mkdir(parents=True, exist_ok=True)
    placed = {}
    for field in ("runs_png", "run_png", "compare_png"):
        png = getattr(shots, field)
        part = out / f".{png.name}.part"  # copied beside its place first: out may be on another file system
        try:
            shutil.copyfile(png, part)
            os.replace(part, out / png.name)
        finally:
            part.unlink(missing_ok=True)
        placed[field] = out / png.name
    return replace(shots, **placed)


def screenshots(store: Path, out: Path, artifacts: Path | None = None, fill: bool = True,
                verify: bool = True) -> Shots:
    """Screenshots of the runs table, of the latest report run's page and of the comparison view of
    ``store`` (a SQLite MLflow store), moved into ``out`` (RUNS_PNG, RUN_PNG, COMPARE_PNG) once taken
    and, under ``verify``, ``check``ed: pictures that fail leave those in ``out`` as they were.
    ``fill``: first give the copy of an older store what the report stage logs today."""
    browser()  # fail before starting a server
    with tempfile.TemporaryDirectory(prefix="mlflow-screenshot-") as tmp:
        uri = f"sqlite:///{copy_store(store, Path(tmp) / 'mlflow.db')}"
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise ScreenshotError(f"no MLflow experiment {EXPERIMENT!r} in {store}")
        run_id = latest_report(client, experiment.experiment_id).info.run_id
        with environ(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            filled = fill_in(client, experiment, client.get_run(run_id)) if fill else []
        report = client.get_run(run_id)
        columns = {key: report.data.metrics[key] for key in answer_columns(report.data.metrics)}
        add_view(client, experiment.experiment_id, list(columns))
        # runs keep their own artifact locations; this is only where new ones would go
        with ui_server(uri, artifacts or store.parent / "mlartifacts") as base:
            urls = (ui_url(base, experiment.experiment_id) + f"&viewStateShareKey={VIEW}",
                    ui_url(base, experiment.experiment_id, run_id), ui_url(base, experiment.experiment_id, compare=True))
            pngs = (Path(tmp) / RUNS_PNG, Path(tmp) / RUN_PNG, Path(tmp) / COMPARE_PNG)
            doms = [chromium(url, png) for url, png in zip(urls[:2], pngs[:2])]
            for scale in COMPARE_SCALES:  # a longer budget while the chart has not drawn
                compare = chromium(urls[2], pngs[2], budget_ms=scale * PAGE_BUDGET_MS)
                if not compare_problems(page_text(compare)):
                    break
            doms.append(compare)
        shots = Shots(*pngs, *(url.removeprefix(base) for url in urls), *map(page_text, doms), EXPERIMENT, run_id,
                      report.data.tags.get("mlflow.note.content", ""), columns,
                      'data-testid="show-comment-toggle"' in doms[1], tuple(filled))
        if verify:
            check(shots)
        return moved(shots, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=ROOT / "mlflow.db", help="the SQLite MLflow store")
    parser.add_argument("--artifacts", type=Path, help="its artifact folder (default: mlartifacts beside it)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go")
    parser.add_argument("--no-check", action="store_true", help="do not check the pages' text")
    args = parser.parse_args(argv)
    try:
        shots = screenshots(args.store, args.out, args.artifacts, verify=not args.no_check)
    except (ScreenshotError, TrackingError) as exc:
        refuse(" ".join(str(exc).split()))  # a browser's or a server's log, in the one line
    for what in shots.filled_in:
        print(f"filled in, in a copy of {args.store}: {what}", file=sys.stderr)
    print(f"wrote {shots.runs_png} ({shots.runs_url})\nwrote {shots.run_png} ({shots.run_url})\n"
          f"wrote {shots.compare_png} ({shots.compare_url})")
    if not args.no_check:
        print(f"checked: both pages show experiment {shots.experiment!r} in the model-training view, the runs "
              f"table the report run's {len(shots.columns)} answer metrics, its page its description, the "
              f"comparison view its chart")
    if shots.description_cut:
        print("note: the run page shows the description's first 150 px only, the rest behind 'Show more'",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
