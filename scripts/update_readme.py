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
# Of a published run's report, the sections the README shows (the rest is one link away).
RUN_SECTIONS = ("## The answer", "## Accuracy per ratio and mode", "## Paired differences", "## Compared")


def demote(markdown: str) -> str:
    return markdown.replace("\n## ", "\n### ")


def results_section() -> str:
    timing = json.loads((ROOT / "reports/repro_time.json").read_text())
    report = (ROOT / "reports/report.md").read_text()
    body = demote(report.split("\n", 1)[1].replace("](figures/", "](reports/figures/")
                  .replace("](sensitivity/", "](reports/sensitivity/"))
    return (f"`dvc repro` with the default params, from nothing, took **{timing['wall_s'] / 60:.1f} min** "
            f"on {timing['cpus']} CPU cores ({timing['processor']}, torch {timing['torch']}, "
            f"CUDA {'on' if timing['cuda'] else 'off'}).\n{body.rstrip()}\n")


def run_section(name: str) -> str:
    folder = ROOT / "docs" / "runs" / name
    run = json.loads((folder / "run.json").read_text())
    report = (folder / "report.md").read_text()
    report = report.replace("](figures/", f"](docs/runs/{name}/figures/")
    sections = [s.strip() for s in re.split(r"\n(?=## )", report) if s.startswith(RUN_SECTIONS)]
    link = f"docs/runs/{name}/report.md"
    return demote(f"From `{run['command']}` at commit {run['commit']} ([full report]({link})).\n\n"
                  + "\n\n".join(sections) + "\n")


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
