"""A latency lookup table of a prunable network on ONNX Runtime: the time of each of its operators
at each width the plan can give the layers that shape it, from which the latency of any plan of
layer widths is predicted without exporting it (NetAdapt 2018's and MetaPruning's lookup tables).

A pruning plan gives each prunable layer (a *unit*: ``PrunableNet.prunable()``) a width, a
multiple of ``round_to`` filters. An operator's time depends on the widths of at most two units:
a pointwise convolution's on the unit before it (its input channels) and its own (its output
channels); a depthwise convolution's on one; a pooling or reshape on one or none. So:

1. **Which units shape which operator** (``dependencies``): the deploy form is run under ONNX
   Runtime's profiler at full width, and once with each unit one step narrower; an operator
   whose input or output shapes change with unit j depends on j. (Found by measurement, not by
   architecture: any network ONNX Runtime runs, as long as no operator depends on more than two
   units and the pairs can be 2-coloured, as a chain of layers can.)
2. **Each operator's time at each pair of widths** (``measure``): the units are coloured so that
   no operator's two units share a colour; for every pair of steps (s, t), a network whose units
   of one colour are s steps wide and of the other t steps wide is run under the profiler, and
   each operator's median kernel time is read at the widths it saw. One pass gives every operator's
   pair at once.
3. **Which operators each removable block runs** (``block_operators``): the network is profiled
   at full width once without each block (``PrunableNet.removable``); the operators that are gone
   are the block's. A plan that removes a block (a width of 0) is predicted without them, its
   next block reading the block's input width (``models.bypassed``).
4. **Calibration** (``calibrate``): a sum of profiled operator times is not a pass's time. The
   profiler adds its own cost to every operator (at batch 1 it is most of a small network's sum),
   reads whole microseconds, and times each operator in the two-width networks of step 2, whose
   cache traffic is not a plan's. So ``CALIBRATION_PLANS`` plans (``calibration_plans``: the
   unpruned network, plans spread from narrow to full, plans near full as a search's first plans
   are, and uniform ones) are exported and timed whole, as the latency stage and the prune stage
   time a network (in turns, a fresh session each turn, the median), and the log of the time is
   fitted as a quadratic in the log of the table's sum, least squares (``Calibration``, with the
   logs' R²), kept only where it rises over the sums it was fitted on; else a straight line in
   the logs (a power law), else the time in proportion to the sum. Beyond the fitted sums the
   fit goes on straight in the logs, along its slope at the nearer end.

   Why this form: on a 2-core x86 machine these plans' times grow faster than their sums (about
   as the sum to the power 2.4 over the whole range), but less steeply near full width; a line
   over the step-2 networks (this table's first calibration) missed held-out plans' times by a
   median 18 and 26 % in two runs, a power law over these plans by 5 and 7 % but a plan near full
   width's share of the unpruned time by about 10 %, which the quadratic brings to 2 to 4 %
   (benchmarks/latency_table.py measures the form in use).

A plan's predicted time is the calibration of its operators' table times' sum at the plan's widths
(``LatencyTable.predict``; ``LatencyTable.profiled_sum`` the sum).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import tempfile
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import UserError
from .export import INPUT, onnx_bytes
from .latency import RUNTIMES, onnx_session, times_in_turns
from .models import PrunableNet, bypassed
from .progress import progress
from .prune import shaped

Widths = tuple[int, ...]


class TableError(UserError, ValueError):
    """The network cannot be tabled this way, or a plan is off the table's grid."""


def steps(channels: int, round_to: int) -> list[int]:
    """The widths a plan can give a unit of ``channels`` filters: the multiples of ``round_to`` up
    to it, and the unit's own width (a unit of no more than ``round_to`` filters keeps them all)."""
    if channels <= round_to:
        return [channels]
    return sorted({*range(round_to, channels, round_to), channels})


def at_step(channels: int, step: int, round_to: int) -> int:
    """A unit's width ``step`` steps up its grid (the last one beyond it)."""
    grid = steps(channels, round_to)
    return grid[min(step, len(grid)) - 1]


@dataclass(frozen=True)
class Pass:
    """One network's operators under the profiler: name -> (shapes seen, median kernel time in us)."""
    shapes: dict[str, str]
    us: dict[str, float]


def profiled(model: PrunableNet, batch: int, threads: int, runs: int, folder: Path,
             data: bytes | None = None) -> Pass:
    """``model``'s deploy form (``data``, if exported already) run under ONNX Runtime's profiler:
    each operator's input and output shapes and median kernel time over ``runs`` runs, after a fifth
    as many warm-up runs (left out)."""
    data = data or onnx_bytes(model)
    x = {INPUT: np.zeros((batch, *model.input_shape), dtype=np.float32)}
    session = onnx_session(data, threads, str(folder / "profile"))
    warmup = max(1, runs // 5)
    for _ in range(warmup + runs):
        session.run(None, x)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    times: dict[str, list[float]] = {}
    shapes: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"].removesuffix("_kernel_time")
        times.setdefault(name, []).append(float(event["dur"]))
        args = event.get("args", {})
        shapes[name] = json.dumps([args.get("input_type_shape"), args.get("output_type_shape")], sort_keys=True)
    return Pass(shapes, {name: statistics.median(values[warmup:] or values) for name, values in times.items()})


def timed_whole(networks: list[bytes], input_shape: tuple[int, ...], batch: int, threads: int,
                runs: int) -> list[float]:
    """Each ONNX model's median time of one pass, in us, without the profiler: in turns, ``runs``
    passes each over 5 rounds, a fresh session each turn."""
    x = np.zeros((batch, *input_shape), dtype=np.float32)
    samples = times_in_turns([partial(RUNTIMES["onnxruntime"], None, data, x, threads) for data in networks],
                             warmup=10, repeats=runs, rounds=5)
    return [float(np.median(ms)) * 1000 for ms in samples]


def dependencies(model: PrunableNet, round_to: int, batch: int, threads: int, runs: int,
                 folder: Path) -> dict[str, tuple[int, ...]]:
    """Operator name -> the units whose widths shape it (sorted; at most two)."""
    full = model.channels()
    base = profiled(shaped(model, full), batch, threads, runs, folder)
    found: dict[str, set[int]] = {name: set() for name in base.shapes}
    for unit, channels in enumerate(full):
        grid = steps(channels, round_to)
        if len(grid) < 2:
            continue  # a unit that cannot narrow shapes nothing a plan changes
        narrower = list(full)
        narrower[unit] = grid[-2]
        other = profiled(shaped(model, narrower), batch, threads, runs, folder)
        if set(other.shapes) != set(base.shapes):
            raise TableError(f"{model.arch}: ONNX Runtime runs other operators when layer {unit} narrows to "
                             f"{grid[-2]} filters (a memory layout it picks by width); a prune.round_to of 16 "
                             "(the vector width of AVX-512) keeps one layout")
        for name, shape in other.shapes.items():
            if shape != base.shapes[name]:
                found[name].add(unit)
    many = {name: units for name, units in found.items() if len(units) > 2}
    if many:
        name, units = next(iter(many.items()))
        raise TableError(f"{model.arch}: operator {name} depends on the widths of layers {sorted(units)}; a "
                         "table of pairs cannot hold it")
    return {name: tuple(sorted(units)) for name, units in found.items()}


def block_operators(model: PrunableNet, base: set[str], batch: int, threads: int, runs: int,
                    folder: Path) -> dict[int, tuple[str, ...]]:
    """Layer -> the operators its block runs, for each layer whose block may be removed: those that
    are gone when the network (of ``base``'s operators) runs at full width without it."""
    found = {}
    for unit in model.removable():
        widths = [0 if u == unit else c for u, c in enumerate(model.channels())]
        left = set(profiled(shaped(model, widths), batch, threads, runs, folder).shapes)
        if not left <= base or left == base:
            raise TableError(f"{model.arch}: ONNX Runtime runs other operators without block {unit} than with it; "
                             "its blocks cannot be priced from the table")
        found[unit] = tuple(sorted(base - left))
    return found


def colours(n_units: int, deps: dict[str, tuple[int, ...]]) -> list[int]:
    """0 or 1 per unit such that the two units of every operator differ (a 2-colouring of the
    pairs), so that one network per pair of steps measures every operator's pair."""
    neighbours: dict[int, set[int]] = {u: set() for u in range(n_units)}
    for units in deps.values():
        if len(units) == 2:
            a, b = units
            neighbours[a].add(b)
            neighbours[b].add(a)
    colour: list[int | None] = [None] * n_units
    for start in range(n_units):
        if colour[start] is not None:
            continue
        colour[start], queue = 0, [start]
        while queue:
            u = queue.pop()
            for v in neighbours[u]:
                if colour[v] is None:
                    colour[v] = 1 - colour[u]
                    queue.append(v)
                elif colour[v] == colour[u]:
                    raise TableError(f"layers {u} and {v} shape one operator and both shape others with a third: "
                                     "the pairs cannot be measured two colours at a time")
    return [int(c) for c in colour]


@dataclass(frozen=True)
class Calibration:
    """log(time) = intercept + slope * x + curvature * x², x = log(sum of the profiled operator
    times), between the sums ``low`` and ``high`` it was fitted over (``calibrate``); beyond them, the
    tangent at the nearer end. ``r2`` of the logs, over ``n`` networks."""
    intercept: float
    slope: float
    curvature: float
    low: float
    high: float
    r2: float
    n: int

    def __call__(self, profiled_sum: float) -> float:
        x = math.log(profiled_sum)
        end = min(max(x, math.log(self.low)), math.log(self.high))  # x itself within the fitted sums
        # intercept + slope * x + curvature * x² within them, and on the tangent at ``end`` beyond
        try:
            time = math.exp(self.intercept + self.curvature * (2 * end * x - end * end)) * profiled_sum ** self.slope
        except OverflowError:
            time = 0.0
        if time > 0:
            return time
        # sums fitted over a narrow range give large coefficients that cancel: taken apart, their
        # exponentials overflow (or underflow), so they are summed in the logs
        return math.exp(self.intercept + self.slope * x + self.curvature * (2 * end * x - end * end))


IDENTITY = Calibration(0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0)  # time = the profiled sum


@dataclass(frozen=True)
class LatencyTable:
    """Each operator's units and its mean profiled time at each pair of their widths, with the
    calibration to a whole pass without the profiler."""
    channels: Widths  # the unpruned network's units
    round_to: int
    deps: dict[str, tuple[int, ...]]
    us: dict[str, dict[Widths, float]]  # operator -> widths of its units -> mean profiled us
    calibration: Calibration
    blocks: dict[int, tuple[str, ...]] = field(default_factory=dict)  # removable unit -> its block's operators
    _interpolators: dict = field(default_factory=dict, repr=False, compare=False)

    def predict(self, widths: list[int] | Widths) -> float:
        """The predicted time of one pass of the network with these unit widths, in us: the
        calibrated ``profiled_sum``."""
        return self.calibration(self.profiled_sum(widths))

    def profiled_sum(self, widths: list[int] | Widths) -> float:
        """The sum of the plan's operators' table times, in profiled us. Widths
        between the measured ones (a table measured every few steps, or a width off the grid of
        multiples of ``round_to``) are interpolated, linearly in each unit's width; a width below
        the narrowest measured one is read as that one (it runs no faster on vector kernels). A width
        of 0 removes the layer's block: its operators are left out, and the layers after it read
        the width before it."""
        if len(widths) != len(self.channels):
            raise TableError(f"{len(widths)} widths for {len(self.channels)} layers")
        removed = [u for u, w in enumerate(widths) if w == 0]
        wide = [(u, w) for u, (w, c) in enumerate(zip(bypassed(list(widths)), self.channels)) if not 1 <= w <= c]
        if wide:
            u, w = wide[0]
            raise TableError(f"width {w} of layer {u} is outside the table (1 to the layer's own {self.channels[u]})")
        if not set(removed) <= set(self.blocks):
            raise TableError(f"layer(s) {sorted(set(removed) - set(self.blocks))} have no block the table can remove")
        gone = {name for u in removed for name in self.blocks[u]}
        widths = [max(w, steps(c, self.round_to)[0]) for w, c in zip(bypassed(list(widths)), self.channels)]
        total = 0.0
        for name, units in self.deps.items():
            if name in gone:
                continue
            key = tuple(widths[u] for u in units)
            total += self.us[name][key] if key in self.us[name] else self._between(name)(key)
        return total

    def _between(self, name: str):
        """Operator ``name``'s times as a function of its units' widths, linear between measured ones."""
        if name not in self._interpolators:
            from scipy.interpolate import RegularGridInterpolator

            keys = list(self.us[name])
            axes = [sorted({k[d] for k in keys}) for d in range(len(keys[0]))]
            grid = np.full([len(a) for a in axes], np.nan)
            for key, us in self.us[name].items():
                grid[tuple(a.index(v) for a, v in zip(axes, key))] = us
            if np.isnan(grid).any():
                raise TableError(f"operator {name}: its table is not a full grid of widths")
            varied = [d for d, a in enumerate(axes) if len(a) > 1]  # a unit measured at one width: constant
            inner = RegularGridInterpolator([axes[d] for d in varied], grid.reshape([len(axes[d]) for d in varied]))
            self._interpolators[name] = lambda key: float(inner(np.asarray([[key[d] for d in varied]], float))[0])
        return self._interpolators[name]

    def frame(self) -> pd.DataFrame:
        """One row per operator and widths: operator, layers, widths, us (what the table stage writes)."""
        return pd.DataFrame([{"operator": name, "layers": " ".join(map(str, self.deps[name])),
                              "widths": " ".join(map(str, key)), "us": round(us, 4)}
                             for name, table in self.us.items() for key, us in sorted(table.items())])

    def meta(self) -> dict:
        return {"channels": list(self.channels), "round_to": self.round_to,
                "calibration": dataclasses.asdict(self.calibration),
                "blocks": {str(u): list(names) for u, names in self.blocks.items()}}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, meta: dict) -> "LatencyTable":
        deps: dict[str, tuple[int, ...]] = {}
        us: dict[str, dict[Widths, float]] = {}
        for row in frame.itertuples(index=False):
            parse = lambda text: tuple(int(v) for v in str(text).split()) if isinstance(text, str) else ()  # noqa: E731
            deps[row.operator] = parse(row.layers)
            us.setdefault(row.operator, {})[parse(row.widths)] = float(row.us)
        blocks = {int(u): tuple(names) for u, names in meta.get("blocks", {}).items()}
        return cls(tuple(meta["channels"]), int(meta["round_to"]), deps, us, Calibration(**meta["calibration"]),
                   blocks)


MIN_R2 = 0.5  # a calibration that explains less of the (log) times than this is noise
CALIBRATION_PLANS = 48  # whole networks the calibration is fitted over, the unpruned one among them


def r_squared(observed: list[float], fitted: np.ndarray) -> float:
    observed = np.asarray(observed)
    spread = float(np.sum((observed - observed.mean()) ** 2))
    return 1 - float(np.sum((observed - fitted) ** 2)) / spread if spread else 1.0


def measured_steps(most: int, stride: int) -> list[int]:
    """The steps a table measures: every ``stride``-th from the first, and the last."""
    return sorted({*range(1, most + 1, stride), most})


def calibration_plans(channels: list[int] | Widths, round_to: int, seed: int = 0) -> list[list[int]]:
    """``CALIBRATION_PLANS`` plans on the grid, the unpruned widths first: half spread from narrow to
    full (each draws a fraction f of the way up, uniform in 0.05 .. 1, and gives each layer about f
    of its steps, 0.6 to 1.4 times f by the layer's own draw); a third near full width, as the
    first plans of a search are (each layer keeps its width, or with a chance of 0.1 to 0.6 drawn
    per plan takes a step in the upper half of its grid); the rest uniform, every layer the same
    fraction of its grid, from 1/8 up to 15/16."""
    rng = random.Random(seed)
    grids = [steps(c, round_to) for c in channels]
    spread, near = CALIBRATION_PLANS // 2, CALIBRATION_PLANS // 3
    plans = [list(channels)]
    for _ in range(spread - 1):
        f = rng.uniform(0.05, 1.0)
        plans.append([g[min(len(g), max(1, round(f * len(g) * rng.uniform(0.6, 1.4)))) - 1] for g in grids])
    for _ in range(near):
        q = rng.uniform(0.1, 0.6)
        plans.append([g[-1] if rng.random() > q else g[rng.randrange(len(g) // 2, len(g))] for g in grids])
    uniform = CALIBRATION_PLANS - len(plans)
    fractions = np.linspace(1 / 8, 15 / 16, uniform)
    plans += [[g[max(0, round(f * len(g)) - 1)] for g in grids] for f in fractions]
    return plans


def calibrate(sums: list[float], times: list[float]) -> Calibration:
    """The log of the time as a quadratic in the log of the sum, least squares, if it rises over the
    fitted sums; else a straight line in the logs that rises; else the time in proportion to the
    sum (module doc, 4). A fit that explains less than ``MIN_R2`` of the logs' spread counts as not
    rising: the times differ by less than their noise."""
    x, y = np.log(sums), np.log(times)
    ends = np.log([min(sums), max(sums)])
    for degree in (2, 1):
        if len(set(sums)) <= degree:
            continue
        curvature, slope, intercept = ([0.0] * (2 - degree) + list(np.polyfit(x, y, degree)))
        r2 = r_squared(y, intercept + slope * x + curvature * x * x)
        if all(slope + 2 * curvature * ends > 0) and r2 >= MIN_R2:  # rising at both ends: throughout
            return Calibration(float(intercept), float(slope), float(curvature), min(sums), max(sums), r2, len(sums))
    intercept = float(np.mean(y - x))  # in proportion to the sum
    return Calibration(intercept, 1.0, 0.0, min(sums), max(sums), r_squared(y, intercept + x), len(sums))


def measure(model: PrunableNet, *, round_to: int, batch: int = 1, threads: int = 1, runs: int = 50,
            stride: int = 1, folder: Path | None = None) -> LatencyTable:
    """The lookup table of ``model``'s architecture (its weights do not matter) on ONNX Runtime's
    CPU provider at ``batch`` and ``threads``, each network run ``runs`` times (module doc), at
    every ``stride``-th step of each unit's grid (``predict`` interpolates between them)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_path = Path(tmp)
        full = model.channels()
        deps = dependencies(model, round_to, batch, threads, runs, tmp_path)
        blocks = block_operators(model, set(deps), batch, threads, runs, tmp_path)
        colour = colours(len(full), deps)
        most = max(len(steps(c, round_to)) for c in full)
        us: dict[str, dict[Widths, list[float]]] = {name: {} for name in deps}
        pairs = list(product(measured_steps(most, stride), repeat=2))
        for s, t in progress(pairs, len(pairs), "latency table"):
            widths = [at_step(c, (s, t)[colour[u]], round_to) for u, c in enumerate(full)]
            seen = profiled(shaped(model, widths), batch, threads, runs, tmp_path)
            if set(seen.us) != set(deps):
                raise TableError(f"{model.arch}: ONNX Runtime runs other operators at widths {widths} than at full "
                                 "width (a memory layout it picks by width); a prune.round_to of 16 (the vector "
                                 "width of AVX-512) keeps one layout")
            for name, units in deps.items():
                us[name].setdefault(tuple(widths[u] for u in units), []).append(seen.us[name])
    table = {name: {key: statistics.fmean(values) for key, values in by.items()} for name, by in us.items()}
    uncalibrated = LatencyTable(tuple(full), round_to, deps, table, IDENTITY, blocks)
    plans = calibration_plans(full, round_to)
    times = timed_whole([onnx_bytes(shaped(model, plan)) for plan in plans], model.input_shape, batch, threads, runs)
    calibration = calibrate([uncalibrated.profiled_sum(plan) for plan in plans], times)
    return dataclasses.replace(uncalibrated, calibration=calibration)
