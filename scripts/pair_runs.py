"""Two published runs compared image by image: one mode of run A against one mode of run B,
paired by retraining seed over the same test images, with the report's 95 % interval over the
seeds and the test images (``stats.crossed_t``) and, beside it, the paired t over seeds alone.

    python scripts/pair_runs.py ctl-kd-t1-75:kd headroom-75:ft [--ratio 0.75]

Meaningful where the two runs share the teacher, the split and the pruned network (a control
and its regime: the same ``seed`` and prune params), so that a seed's two models start from the
same weights and differ only in what the runs changed. Reads docs/runs/<run>/correct/
(scripts/publish_run.py) and prints one line; ``pair`` gives the figures (scripts/update_readme.py's
tables of pairs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from prunekd.errors import refuse
from prunekd.paths import ratio_key
from prunekd.stats import crossed_t, paired_t

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "runs"


class PairError(ValueError):
    """Two runs that cannot be paired: one not published with its per-image results, or too few
    shared seeds."""


class Paired(NamedTuple):
    """Mode A of one run minus mode B of another, in points: the interval over seeds and test
    images (``low``, ``high``), over seeds alone (``seeds_low``, ``seeds_high``), and in how many of
    the ``seeds`` A scored higher."""
    diff: float
    low: float
    high: float
    seeds_low: float
    seeds_high: float
    ahead: int
    seeds: int


MODE = re.compile(r"[a-z][a-z0-9_]*")  # a retraining mode as results.csv names it (ft, kd, scratch_kd)


def correct(run: str, ratio: float, mode: str) -> dict[int, np.ndarray]:
    """Seed -> each test image right (1) or wrong (0), for ``mode`` at ``ratio`` in published ``run``."""
    folder = RUNS / run / "correct"
    prefix = f"{ratio_key(ratio)}-{mode}-"
    files = {int(m[1]): p for p in folder.glob("*.npy") if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.npy", p.name))}
    if not files:
        raise PairError(f"no {prefix}<seed>.npy in {folder.relative_to(ROOT)}: publish the run with "
                        "scripts/publish_run.py")
    images = json.loads((folder / "images.json").read_text())["images"]
    return {seed: np.unpackbits(np.load(path, allow_pickle=False), count=images) for seed, path in sorted(files.items())}


def run_and_mode(text: str) -> tuple[str, str]:
    """``RUN:MODE`` split in two; a PairError unless RUN is a plain name (no path out of RUNS) and
    MODE a mode's name."""
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_runs import RUN_NAME  # what a published run may be named

    run, _, mode = text.partition(":")
    if not (RUN_NAME.fullmatch(run) and MODE.fullmatch(mode)):
        raise PairError(f"{text!r}: expected RUN:MODE, a published run and one of its modes (e.g. ctl-kd-t1-75:kd)")
    return run, mode


def paired(first: dict[int, np.ndarray], second: dict[int, np.ndarray], what: str) -> Paired:
    """``first`` minus ``second`` (seed -> each test image right or wrong), paired by the seeds they
    share over the same test images; ``what`` names the two where fewer than 2 seeds are shared."""
    seeds = sorted(first.keys() & second.keys())
    if len(seeds) < 2:
        raise PairError(f"{what} share {len(seeds)} seed(s); an interval needs 2")
    per_image = np.stack([first[s].astype(float) - second[s] for s in seeds])
    both, alone = crossed_t(per_image), paired_t(100 * per_image.mean(axis=1))
    return Paired(both.diff, both.low, both.high, alone.low, alone.high, int((per_image.mean(axis=1) > 0).sum()),
                  len(seeds))


def pair(a: str, b: str, ratio: float) -> Paired:
    """``a`` minus ``b`` (each ``RUN:MODE``) at ``ratio``, paired by seed over the same test images."""
    (run_a, mode_a), (run_b, mode_b) = map(run_and_mode, (a, b))
    return paired(correct(run_a, ratio, mode_a), correct(run_b, ratio, mode_b), f"{a} and {b} at ratio {ratio:g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="RUN:MODE, e.g. ctl-kd-t1-75:kd")
    parser.add_argument("b", help="RUN:MODE, e.g. headroom-75:ft")
    parser.add_argument("--ratio", type=float, default=0.75)
    args = parser.parse_args(argv)
    try:
        got = pair(args.a, args.b, args.ratio)
    except PairError as exc:
        refuse(str(exc))
    print(f"{args.a} − {args.b} at ratio {args.ratio:g}: {got.diff:+.2f} points, 95 % CI {got.low:+.2f} to "
          f"{got.high:+.2f} over seeds and test images (seeds alone {got.seeds_low:+.2f} to {got.seeds_high:+.2f}); "
          f"{args.a.split(':', 1)[0]} ahead in {got.ahead} of {got.seeds} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
