#!/usr/bin/env bash
# Time the test suite as the README's second command runs it (`pytest`) and its fast layer
# (`pytest tests/unit`), and record both next to the reports for the README (scripts/update_readme.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import json, os, subprocess, sys, time


def timed(*args: str) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", *args], check=True)
    return time.monotonic() - start


unit = timed("tests/unit")
whole = timed()
with open("reports/test_time.json", "w") as f:
    json.dump({"unit_s": round(unit, 1), "all_s": round(whole, 1), "cpus": os.cpu_count()}, f, indent=2)
print(f"pytest took {whole / 60:.1f} min, pytest tests/unit {unit / 60:.1f} min")
PY
