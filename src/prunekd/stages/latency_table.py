"""latency_table: the teacher's architecture timed on ONNX Runtime operator by operator, at each
pair of layer widths a plan can give (``latency_table.measure``): what ``prune.unit: latency``
plans on.

It times the architecture (``model.arch`` and ``model.width`` on ``data.dataset``'s image shape),
not a trained model, so it reruns only when the architecture, ``prune.round_to`` or the
measurement settings change; a new teacher does not rerun it. Under any other unit it writes an
empty table and measures nothing (DVC's run-cache restores a table measured before when the unit
comes back).
"""

from __future__ import annotations

import json
import time

import pandas as pd

from ..config import Params
from ..io import CorruptInputError, MissingInputError, read_table, stage_outputs
from ..latency_table import LatencyTable, measure
from ..models import PrunableNet, untrained
from ..paths import Layout
from ..tracking import stage_run
from .cli import run_cli

RERUN = "rerun the latency_table stage (dvc repro latency_table)"


def settings(params: Params) -> dict:
    """What a table is measured under, besides the network: recorded with it, checked on reading."""
    p = params.prune
    return {"runtime": p.latency_runtime, "batch": p.latency_batch, "threads": params.measure.threads,
            "round_to": p.round_to}


def read_latency_table(layout: Layout, teacher: PrunableNet) -> tuple[LatencyTable, dict]:
    """The lookup table and its meta, refused unless it was measured, for ``teacher``'s architecture."""
    folder, meta_file, table_file = layout.latency_table, layout.latency_table_meta, layout.latency_table_rows
    if not meta_file.is_file() or not table_file.is_file():
        raise MissingInputError(f"{folder}: no latency table; {RERUN}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        raise CorruptInputError(f"{meta_file}: not readable JSON; {RERUN}") from None
    if not isinstance(meta, dict) or not meta.get("measured"):
        raise MissingInputError(f"{folder}: the table was not measured (made under prune.unit "
                                f"{meta.get('unit') if isinstance(meta, dict) else '?'}); {RERUN}")
    here = {"channels": teacher.channels(), "input_shape": list(teacher.input_shape)}
    differ = [k for k, v in here.items() if meta.get(k) != v]
    if differ:
        raise CorruptInputError(f"{meta_file}: measured for another network ({differ[0]} {meta.get(differ[0])!r}) "
                                f"than the teacher's ({here[differ[0]]!r}); {RERUN}")
    frame = read_table(table_file, "a latency table", RERUN)
    if frame.empty or not {"operator", "layers", "widths", "us"} <= set(frame.columns):
        raise CorruptInputError(f"{table_file}: no latency rows; {RERUN}")
    try:
        return LatencyTable.from_frame(frame, meta), meta
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptInputError(f"{table_file}: not a latency table ({exc}); {RERUN}") from None


def load_table(layout: Layout, params: Params, teacher: PrunableNet) -> LatencyTable:
    """The lookup table (``read_latency_table``), refused unless it was measured under today's settings."""
    table, meta = read_latency_table(layout, teacher)
    here = settings(params)
    differ = [k for k, v in here.items() if meta.get(k) != v]
    if differ:
        raise CorruptInputError(f"{layout.latency_table_meta}: measured with {differ[0]} {meta.get(differ[0])!r}, "
                                f"the params ask for {here[differ[0]]!r}; {RERUN}")
    return table


def run(params: Params, layout: Layout) -> dict:
    p = params.prune
    folder, rows, meta_file = layout.latency_table, layout.latency_table_rows, layout.latency_table_meta
    meta: dict = {"unit": p.unit, "measured": p.unit == "latency"}
    if p.unit != "latency":  # nothing measured: no MLflow run either
        with stage_outputs(folder, root=layout.root) as scratch:
            (scratch / folder.name).mkdir()
            pd.DataFrame(columns=["operator", "layers", "widths", "us"]).to_csv(scratch / folder.name / rows.name,
                                                                                index=False)
            (scratch / folder.name / meta_file.name).write_text(json.dumps(meta, indent=2) + "\n")
        print(f"latency_table: prune.unit is {p.unit}; nothing to measure")
        return {"operators": 0}
    model = untrained(params.model, params.data.dataset)
    with (stage_run("latency_table", params, {"arch": model.arch}, layout) as run,
          stage_outputs(folder, root=layout.root) as scratch):  # the previous table stays until this succeeds
        out = scratch / folder.name
        out.mkdir()
        print(f"latency_table: {model.arch} {model.channels()} on {p.latency_runtime}, batch {p.latency_batch}, "
              f"{params.measure.threads} thread(s), widths in steps of {p.round_to} (every {p.latency_stride})")
        start = time.monotonic()
        table = measure(model, round_to=p.round_to, batch=p.latency_batch, threads=params.measure.threads,
                        runs=p.latency_runs, stride=p.latency_stride, folder=scratch)
        seconds = time.monotonic() - start
        frame = table.frame()
        frame.to_csv(out / rows.name, index=False)
        meta |= table.meta() | {"input_shape": list(model.input_shape), "arch": model.arch,
                                "unpruned_us": table.predict(model.channels()), "seconds": round(seconds, 1)}
        meta |= settings(params)
        (out / meta_file.name).write_text(json.dumps(meta, indent=2) + "\n")
        c = table.calibration
        figures = {"operators": len(table.deps), "entries": len(frame), "calibration_networks": c.n,
                   "calibration_r2": c.r2, "unpruned_predicted_us": meta["unpruned_us"],
                   "seconds": seconds}
        run.log_metrics(figures)
        run.log_artifact(out / rows.name, "latency_table")
    print(f"latency_table: {len(table.deps)} operators, {len(frame)} entries in {seconds:.0f} s; calibrated over "
          f"{c.n} whole networks (R² {c.r2:.3f} of the logs)")
    return figures


def main(argv: list[str] | None = None) -> int:
    return run_cli("latency_table", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
