"""Copy the measured results into the documents that show them: README.md (the default run's
answer) and docs/results.md (its cost tables and every published run, docs/runs/<name>/ from
scripts/publish_run.py). Each document holds blocks

    <!-- results:begin --> ... <!-- results:end -->            the default run's answer and the thesis
    <!-- results-cost:begin --> ... <!-- results-cost:end -->  the default run's cost and latency tables
    <!-- run:<name>:begin --> ... <!-- run:<name>:end -->      a published run's answer or comparison

and this script rewrites what is between the markers, with links relative to the document.
Run after scripts/timed_repro.sh; the results are generated, never typed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/results.md")
RUN_BLOCK = re.compile(r"(<!-- run:([\w.-]+):begin -->).*?(<!-- run:\2:end -->)", re.DOTALL)
# Of a report, the sections a block shows (the rest is one link away).
RUN_SECTIONS = ("## The answer", "## Compared")
OLD_RUN_SECTIONS = ("## Accuracy per ratio and mode", "## Paired differences")  # reports with no answer section
DEFAULT_BLOCKS = {
    "results": ("## The answer", "## Against the thesis"),
    "results-cost": ("## Cost per ratio", "## Latency per architecture"),
}
FIRST_FIGURE_ONLY = {"results"}  # the front page shows the answer's figure, not every figure


def demote(markdown: str) -> str:
    return markdown.replace("\n## ", "\n### ")


def sections(report: str, wanted: tuple[str, ...]) -> str:
    """The report's sections that start with one of ``wanted``, in the report's order, each with
    the figure lines that follow it."""
    return "\n\n".join(s.strip() for s in re.split(r"\n(?=## )", report) if s.startswith(wanted))


def first_figure_only(markdown: str) -> str:
    figures = [line for line in markdown.splitlines() if line.startswith("![")]
    for extra in figures[1:]:
        markdown = markdown.replace(f"\n{extra}\n", "\n")
    return re.sub(r"\n{3,}", "\n\n", markdown)


def relink(markdown: str, folder: str, prefix: str) -> str:
    """A report's links to its own folder (``figures/``, ``sensitivity/``), as seen from a
    document whose way back to the project root is ``prefix``."""
    for sub in ("figures/", "sensitivity/", "report.md"):
        markdown = markdown.replace(f"]({sub}", f"]({prefix}{folder}/{sub}")
    return markdown


def default_block(name: str, prefix: str = "") -> str:
    report = relink((ROOT / "reports/report.md").read_text(), "reports", prefix)
    body = demote("\n" + sections(report, DEFAULT_BLOCKS[name])).rstrip() + "\n"
    if name in FIRST_FIGURE_ONLY:
        body = first_figure_only(body)
    if name != "results":
        return body.lstrip("\n")
    timing = json.loads((ROOT / "reports/repro_time.json").read_text())
    return (f"`dvc repro` with the default params, from nothing, took **{timing['wall_s'] / 60:.1f} min** "
            f"on {timing['cpus']} CPU cores ({timing['processor']}, torch {timing['torch']}, "
            f"CUDA {'on' if timing['cuda'] else 'off'}); the whole report, with every paired difference, "
            f"the sensitivity of each layer and the figures, is [reports/report.md]({prefix}reports/report.md).\n"
            f"{body}")


def run_section(name: str, prefix: str = "") -> str:
    folder = ROOT / "docs" / "runs" / name
    run = json.loads((folder / "run.json").read_text())
    report = relink((folder / "report.md").read_text(), f"docs/runs/{name}", prefix)
    link = f"{prefix}docs/runs/{name}/report.md"
    return demote(f"From `{run['command']}` at commit {run['commit']} ([full report]({link})).\n\n"
                  + (sections(report, RUN_SECTIONS) or sections(report, OLD_RUN_SECTIONS)) + "\n")


def fill(text: str, prefix: str) -> str:
    """``text`` with every block's contents regenerated; a run not yet published keeps its block."""
    for name in DEFAULT_BLOCKS:
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _, n=name, b=begin, e=end: f"{b}\n{default_block(n, prefix)}{e}", text)

    def run_block(block: re.Match) -> str:
        if not (ROOT / "docs" / "runs" / block.group(2) / "run.json").is_file():  # announced, not yet published
            print(f"update_readme: docs/runs/{block.group(2)} not published yet; its block is left as it is")
            return block.group(0)
        return f"{block.group(1)}\n{run_section(block.group(2), prefix)}{block.group(3)}"
    return RUN_BLOCK.sub(run_block, text)


def main() -> None:
    for document in DOCUMENTS:
        path = ROOT / document
        prefix = os.path.relpath(ROOT, path.parent).replace(os.sep, "/") + "/"
        path.write_text(fill(path.read_text(), "" if prefix == "./" else prefix))


if __name__ == "__main__":
    main()
