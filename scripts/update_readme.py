"""Copy the measured results (reports/report.md, reports/repro_time.json) into README.md.

Run after scripts/timed_repro.sh; the README's results section is generated, never typed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_section() -> str:
    timing = json.loads((ROOT / "reports/repro_time.json").read_text())
    report = (ROOT / "reports/report.md").read_text()
    body = report.split("\n", 1)[1].replace("](figures/", "](reports/figures/").replace("](sensitivity/", "](reports/sensitivity/").replace("\n## ", "\n### ")
    return (f"`dvc repro` with the default params, from nothing, took **{timing['wall_s'] / 60:.1f} min** "
            f"on {timing['cpus']} CPU cores ({timing['processor']}, torch {timing['torch']}, "
            f"CUDA {'on' if timing['cuda'] else 'off'}).\n{body.rstrip()}\n")


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{results_section()}{END}", text))


if __name__ == "__main__":
    main()
