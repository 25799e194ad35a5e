#!/usr/bin/env bash
# Run `dvc repro` and record its wall time next to the reports, for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
dvc repro "$@"
end=$(date +%s.%N)
python - "$start" "$end" <<'PY'
import json, os, platform, sys
import torch
wall = float(sys.argv[2]) - float(sys.argv[1])
info = {"wall_s": round(wall, 1), "cpus": os.cpu_count(), "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
        "cuda": torch.cuda.is_available()}
with open("reports/repro_time.json", "w") as f:
    json.dump(info, f, indent=2)
print(f"dvc repro took {wall / 60:.1f} min")
PY
