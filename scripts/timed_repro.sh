#!/usr/bin/env bash
# Run `dvc repro` and record its wall time next to the reports, for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .prunekd
log=.prunekd/timed_repro.log  # dvc's output, to count the stages it ran
start=$(date +%s.%N)
dvc repro "$@" 2>&1 | tee "$log"
end=$(date +%s.%N)
stages=$(dvc stage list --name-only | wc -l)  # dvc.yaml's, each matrix item one (dvc.lock may keep old ones)
python - "$start" "$end" "$log" "$*" "$stages" <<'PY'
import json, os, platform, sys
import torch
wall = float(sys.argv[2]) - float(sys.argv[1])
ran = sum(line.startswith("Running stage '") for line in open(sys.argv[3]))
stages = int(sys.argv[5])


def cpu_model() -> str:
    """The CPU's model name and the vector extensions PyTorch's kernels choose by (Linux's
    /proc/cpuinfo: the same params give other model bytes on another), else what platform knows."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    return ", ".join([fields["model name"], *isa])


info = {"wall_s": round(wall, 1), "stages_run": ran, "stages": stages, "args": sys.argv[4],
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "processor": cpu_model(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
with open("reports/repro_time.json", "w") as f:
    json.dump(info, f, indent=2)
print(f"dvc repro took {wall / 60:.1f} min ({ran} of {stages} stages run)")
PY
