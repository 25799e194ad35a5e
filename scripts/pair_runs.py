"""Two published runs compared image by image: one mode of run A against one mode of run B,
paired by retraining seed over the same test images, with the report's 95 % interval over the
seeds and the test images (``stats.crossed_t``) and, beside it, the paired t over seeds alone.

    python scripts/pair_runs.py ctl-kd-t1-75:kd headroom-75:ft [--ratio 0.75]

Meaningful where the two runs share the teacher, the split and the pruned network (a control
and its regime: the same ``seed`` and prune params), so that a seed's two models start from the
same weights and differ only in what the runs changed. Reads docs/runs/<run>/correct/
(scripts/publish_run.py) and prints one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from prunekd.paths import ratio_key
from prunekd.stats import crossed_t, paired_t

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"


def correct(run: str, ratio: float, mode: str) -> dict[int, np.ndarray]:
    """Seed -> each test image right (1) or wrong (0), for ``mode`` at ``ratio`` in published ``run``."""
    folder = RUNS / run / "correct"
    prefix = f"{ratio_key(ratio)}-{mode}-"
    files = sorted(folder.glob(f"{prefix}*.npy"))
    images = json.loads((folder / "images.json").read_text())["images"] if files else 0
    found = {int(p.stem.removeprefix(prefix)): np.unpackbits(np.load(p, allow_pickle=False), count=images)
             for p in files}
    if not found:
        sys.exit(f"pair_runs: no {prefix}<seed>.npy in {folder.relative_to(ROOT)}: publish the run with "
                 "scripts/publish_run.py")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="RUN:MODE, e.g. ctl-kd-t1-75:kd")
    parser.add_argument("b", help="RUN:MODE, e.g. headroom-75:ft")
    parser.add_argument("--ratio", type=float, default=0.75)
    args = parser.parse_args(argv)
    (run_a, mode_a), (run_b, mode_b) = (s.split(":", 1) for s in (args.a, args.b))
    a, b = correct(run_a, args.ratio, mode_a), correct(run_b, args.ratio, mode_b)
    seeds = sorted(a.keys() & b.keys())
    if len(seeds) < 2:
        sys.exit(f"pair_runs: {args.a} and {args.b} share {len(seeds)} seed(s) at ratio {args.ratio}; "
                 "an interval needs 2")
    per_image = np.stack([a[s].astype(float) - b[s] for s in seeds])
    both, alone = crossed_t(per_image), paired_t(100 * per_image.mean(axis=1))
    ahead = int((per_image.mean(axis=1) > 0).sum())
    print(f"{args.a} − {args.b} at ratio {args.ratio:g}: {both.diff:+.2f} points, 95 % CI {both.low:+.2f} to "
          f"{both.high:+.2f} over seeds and test images (seeds alone {alone.low:+.2f} to {alone.high:+.2f}); "
          f"{run_a} ahead in {ahead} of {len(seeds)} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
