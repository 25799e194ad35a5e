"""Copy the measured results into README.md: the default run's (reports/report.md,
reports/repro_time.json) and each published run's (docs/runs/<name>/, scripts/publish_run.py).

Run after scripts/timed_repro.sh; the README's results sections are generated, never typed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
RUN_BLOCK = re.compile(r"(<!-- run:([\w.-]+):begin -->).*?(<!-- run:\2:end -->)", re.DOTALL)
# Of a report, the sections the README shows (the rest is one link away): the answer, and for the
# default run the thesis beside it, its caveats and the cost of each network.
RUN_SECTIONS = ("## The answer", "## Compared")
OLD_RUN_SECTIONS = ("## Accuracy per ratio and mode", "## Paired differences")  # reports with no answer section
DEFAULT_SECTIONS = ("## The answer", "## Against the thesis", "## Cost per ratio", "## Latency per architecture")


def demote(markdown: str) -> str:
    return markdown.replace("\n## ", "\n### ")


def sections(report: str, wanted: tuple[str, ...]) -> str:
    """The report's sections that start with one of ``wanted``, in the report's order, each with
    the figure lines that follow it."""
    return "\n\n".join(s.strip() for s in re.split(r"\n(?=## )", report) if s.startswith(wanted))


def results_section() -> str:
    timing = json.loads((ROOT / "reports/repro_time.json").read_text())
    report = (ROOT / "reports/report.md").read_text().replace("](figures/", "](reports/figures/")
    body = demote("\n" + sections(report.replace("](sensitivity/", "](reports/sensitivity/"), DEFAULT_SECTIONS))
    return (f"`dvc repro` with the default params, from nothing, took **{timing['wall_s'] / 60:.1f} min** "
            f"on {timing['cpus']} CPU cores ({timing['processor']}, torch {timing['torch']}, "
            f"CUDA {'on' if timing['cuda'] else 'off'}); the whole report, with every paired difference, "
            f"the sensitivity of each layer and the figures, is [reports/report.md](reports/report.md).\n"
            f"{body.rstrip()}\n")


def run_section(name: str) -> str:
    folder = ROOT / "docs" / "runs" / name
    run = json.loads((folder / "run.json").read_text())
    report = (folder / "report.md").read_text()
    report = report.replace("](figures/", f"](docs/runs/{name}/figures/")
    link = f"docs/runs/{name}/report.md"
    return demote(f"From `{run['command']}` at commit {run['commit']} ([full report]({link})).\n\n"
                  + (sections(report, RUN_SECTIONS) or sections(report, OLD_RUN_SECTIONS)) + "\n")


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    text = pattern.sub(lambda _: f"{BEGIN}\n{results_section()}{END}", text)
    def fill(block: re.Match) -> str:
        if not (ROOT / "docs" / "runs" / block.group(2) / "run.json").is_file():  # announced, not yet published
            print(f"update_readme: docs/runs/{block.group(2)} not published yet; its block is left as it is")
            return block.group(0)
        return f"{block.group(1)}\n{run_section(block.group(2))}{block.group(3)}"
    text = RUN_BLOCK.sub(fill, text)
    readme.write_text(text)


if __name__ == "__main__":
    main()
