"""Print what a failed test run left, last, so the tail of a CI log shows it.

pytest's own summary can scroll out of a log's tail (a worker's internal error prints its traceback
after it). This reads the JUnit XML that `.ci/run` asks pytest to write and prints the disk's free
space (a full disk fails tests by the hundred, each in another way), the counts, and each failed or
errored test with the first line of what it said.

    python .ci/failures.py JUNIT_XML
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path


def free_space() -> str:
    where = {Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()}
    return ", ".join(f"{p}: {shutil.disk_usage(p).free / 2**30:.1f} GiB free" for p in sorted(where))


def failures(junit: Path) -> tuple[dict[str, int], list[str]]:
    """Counts by outcome, and one line per failed or errored test (its id, then what it said)."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    lines = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        counts["tests"] += 1
        for outcome in ("failure", "error", "skipped"):
            found = case.find(outcome)
            if found is None:
                continue
            counts["skipped" if outcome == "skipped" else outcome + "s"] += 1
            if outcome != "skipped":
                said = (found.get("message") or found.text or "").strip().splitlines()
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                lines.append(f"{outcome.upper():7} {name}: {said[0][:200] if said else '(nothing said)'}")
    return counts, lines


def main(argv: list[str]) -> int:
    print(f"\n== after the failed run == {free_space()}")
    junit = Path(argv[1]) if len(argv) > 1 else None
    if junit is None or not junit.is_file():
        print(f"no JUnit XML at {junit} (pytest stopped before writing it)")
        return 0
    counts, lines = failures(junit)
    print(", ".join(f"{n} {k}" for k, n in counts.items()))
    print("\n".join(lines[:60]))
    if len(lines) > 60:
        print(f"... and {len(lines) - 60} more")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
