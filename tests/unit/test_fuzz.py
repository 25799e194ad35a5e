"""Fuzzing what a user or a broken disk can hand prunekd: params files, and byte-level damage to
every kind of file a stage reads. Whatever the input, the reader either accepts it or raises one
of the user errors the CLI prints as one line (exit 2); nothing else escapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekd.config import load_params
from prunekd.data import Split, load_prepared, split_md5
from prunekd.errors import UserError
from prunekd.export import export_onnx
from prunekd.io import read_json, write_json
from prunekd.latency import check_onnx
from prunekd.models import build_model, load_model, save_model
from prunekd.paths import Layout
from prunekd.report import (_correct, collect_histories, history_table, read_latency, read_sensitivity,
                             sensitivity_section)

from ..conftest import ROOT

# derandomize: the same examples on every run (a test run is deterministic; widen max_examples to hunt)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(exc: BaseException) -> None:
    """A user error, whose line (as the CLI prints it: its lines joined) says something, briefly."""
    line = " ".join(part.strip() for part in str(exc).splitlines())
    assert isinstance(exc, (UserError, PermissionError)), f"{type(exc).__name__}: {line[:300]}"
    assert line and len(line) < 2000, line[:300]


# ---- params files ---------------------------------------------------------------------------------

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
LEAVES = [(section, key) for section, body in BASE.items() if isinstance(body, dict) for key in body]

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(LEAVES), values), min_size=1, max_size=3),
       extra=st.one_of(st.none(), st.tuples(st.text(min_size=1, max_size=12), values)))
def test_any_params_load_or_fail_in_one_line(tmp_path, changes, extra):
    raw = json.loads(json.dumps(BASE))
    for (section, key), value in changes:
        raw[section][key] = value
    if extra:
        raw[extra[0]] = extra[1]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    try:
        load_params(path)
    except Exception as exc:  # noqa: BLE001  (anything but a user error fails the test)
        one_line(exc)


@FUZZ
@given(text=st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_params_file_loads_or_fails_in_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_params(path)
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


# ---- damaged input files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One real file of each kind a stage reads, as prunekd writes it."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = build_model("lenet5", 10, (1, 8, 8), 0.25).eval()
    save_model(model, root / "model.pt", {"ratio": "0.3"})
    export_onnx(model, root / "model.onnx")
    labels = np.arange(20) % 10
    np.save(root / "predictions.npy", labels, allow_pickle=False)
    write_json(root / "metrics.json", {"top1": 100.0, "params": 1000, "macs": 2e4, "size_mb": 0.01})
    prepared = root / "prepared"
    prepared.mkdir()
    sizes, md5 = {}, {}
    for name, n in (("train", 12), ("val", 4), ("test", 4)):
        split = Split(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8), torch.arange(n) % 10)
        torch.save({"x": split.x, "y": split.y}, prepared / f"{name}.pt")
        sizes[name], md5[name] = n, split_md5(split)
    write_json(prepared / "manifest.json", {"dataset": "digits", "classes": [str(i) for i in range(10)],
                                            "input_shape": [1, 8, 8], "mean": [0.5], "std": [0.25],
                                            "mirror_ok": False, "sizes": sizes, "split_md5": md5})
    (root / "latency.csv").write_text("ratio,runtime,batch,median_ms\n0,onnxruntime,1,0.1\n0.3,onnxruntime,1,0.05\n")
    (root / "curves.csv").write_text("layer,index,channels,ratio,kept,val_top1,drop\nstem.0,0,16,0,16,92.15,0\n"
                                     "stem.0,0,16,0.5,8,90.1,2.05\nblocks.0,1,32,0,32,92.15,0\nblocks.0,1,32,0.5,16,91,1.15\n")
    history = Layout(root / "project").retrained(0.3, "ft", 0) / "history.csv"
    history.parent.mkdir(parents=True)
    history.write_text("epoch,train_loss,train_top1,val_top1,val_loss\n1,0.223,91.7407,90.9667,0.238282\n"
                       "2,0.200361,92.4389,91.9833,0.221189\n")
    return {"model.pt": root / "model.pt", "model.onnx": root / "model.onnx",
            "predictions.npy": root / "predictions.npy", "metrics.json": root / "metrics.json",
            "manifest.json": prepared / "manifest.json", "test.pt": prepared / "test.pt",
            "latency.csv": root / "latency.csv", "curves.csv": root / "curves.csv", "history.csv": history}


def read(kind: str, files: dict[str, Path]) -> None:
    """What the stages do with a file of ``kind``."""
    if kind == "model.pt":
        load_model(files[kind])
    elif kind == "model.onnx":
        model, _ = load_model(files["model.pt"])
        check_onnx(model, files[kind], files["model.pt"])
    elif kind == "predictions.npy":
        _correct(files[kind], np.arange(20) % 10, "its stage", 100.0)
    elif kind == "metrics.json":
        read_json(files[kind], ("top1", "params", "macs", "size_mb"))
    elif kind in ("manifest.json", "test.pt"):
        load_prepared(files[kind].parent)
    elif kind == "latency.csv":
        read_latency(files[kind], [0.3])
    elif kind == "curves.csv":  # read and shown by the report
        sensitivity_section(read_sensitivity(files[kind]), "sensitivity.png")
    elif kind == "history.csv":  # a retrain's epochs, which the report draws
        layout = Layout(files[kind].parents[3])
        history_table(collect_histories(layout, pd.DataFrame([{"ratio": 0.3, "mode": "ft", "seed": 0}])))


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)))


def damaged(data: bytes, how) -> bytes:
    kind, arg = how
    if kind == "cut":
        return data[:int(arg * len(data))]
    if kind == "append":
        return data + arg
    out = bytearray(data)
    for where, xor in arg:
        out[int(where * len(out))] ^= xor
    return bytes(out)


@pytest.mark.parametrize("kind", ["model.pt", "model.onnx", "predictions.npy", "metrics.json", "manifest.json",
                                  "test.pt", "latency.csv", "curves.csv", "history.csv"])
@FUZZ
@given(how=damage)
def test_a_damaged_input_is_read_or_refused_in_one_line(files, kind, how):
    path = files[kind]
    good = path.read_bytes()
    read(kind, files)  # the undamaged file is read
    try:
        path.write_bytes(damaged(good, how))
        try:
            read(kind, files)
        except Exception as exc:  # noqa: BLE001
            one_line(exc)
    finally:
        path.write_bytes(good)
