"""int8 post-training quantisation of a model's deploy form on ONNX Runtime.

One recipe, chosen by measurement (benchmarks/int8.py, its figures and what they depend on:
docs/guide.md, "int8"): ONNX Runtime's pre-processing (shape inference, graph optimisation), then
static quantisation in QDQ format with per-channel int8 weights and uint8 activations, their
ranges calibrated on the first ``quantize.calibration_images`` training images. The alternatives
it was measured against (``quantize_onnx``'s keyword options) were no faster: the QOperator format
runs at the same speed, and quantising only the convolutions, int8 activations, or leaving the
depthwise convolutions in fp32 (``nodes_to_exclude``) run slower. Whether int8 pays at all depends
on the network's width and the CPU, so the latency stage times both forms, and the report says
which form of each network to deploy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import ConfigError, QuantizeConfig
from .data import Prepared, normalize
from .export import INPUT

CALIBRATION_BATCH = 64  # images per calibration pass
PREDICTION_BATCH = 500


def calibration_images(prepared: Prepared, count: int) -> np.ndarray:
    """The first ``count`` training images, normalised as the model sees them (the split is already
    a seeded shuffle, so these are a fixed random sample)."""
    if count > len(prepared.train):
        raise ConfigError(f"quantize.calibration_images: {count} is more than the {len(prepared.train)} images "
                          "of the training split; use at most that many")
    norm = prepared.normalization
    return normalize(prepared.train.x[:count], norm.mean, norm.std).numpy()


@contextmanager
def _quiet_scratch(folder: Path) -> Iterator[None]:
    """ONNX Runtime's quantiser writes its augmented model to a temporary folder, logs advice at
    WARNING and prints its histogram settings: the folder goes inside ``folder`` (in the project,
    removed with it), the advice and the prints stay out of the stage's log."""
    saved_dir, root = tempfile.tempdir, logging.getLogger()
    saved_level = root.level
    tempfile.tempdir = str(folder)
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tempfile.tempdir = saved_dir
        root.setLevel(saved_level)


def depthwise_convs(onnx_file: Path) -> list[str]:
    """The names of the depthwise (grouped) convolutions of an ONNX model."""
    import onnx

    return [node.name for node in onnx.load(str(onnx_file)).graph.node if node.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in node.attribute)]


def quantize_onnx(src: Path, dst: Path, calibration: np.ndarray, config: QuantizeConfig, *,
                  preprocess: bool = True, operator_format: bool = False, int8_activations: bool = False,
                  op_types: list[str] | None = None, skip_depthwise: bool = False) -> Path:
    """Write the int8 form of the fp32 ONNX model ``src`` to ``dst`` (atomically), calibrated on
    ``calibration`` (normalised images, N x C x H x W), by the recipe above; the keyword options
    are the alternatives benchmarks/int8.py measures against it (QOperator format, int8
    activations, only ``op_types`` quantised, depthwise convolutions left in fp32, no pre-processing)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {INPUT: calibration[start:start + CALIBRATION_BATCH]}

    dst.parent.mkdir(parents=True, exist_ok=True)
    work = dst.with_name(f".{dst.name}.work.tmp")
    work.mkdir(exist_ok=True)
    try:
        with _quiet_scratch(work):
            model = src
            if preprocess:
                model = work / "preprocessed.onnx"
                quant_pre_process(str(src), str(model), skip_symbolic_shape=True)
            out = work / dst.name
            quantize_static(str(model), str(out), Reader(),
                            quant_format=QuantFormat.QOperator if operator_format else QuantFormat.QDQ,
                            per_channel=config.per_channel,
                            activation_type=QuantType.QInt8 if int8_activations else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                            nodes_to_exclude=depthwise_convs(model) if skip_depthwise else None,
                            calibrate_method=methods[config.method],
                            extra_options={"ActivationSymmetric": True} if int8_activations else None)
        os.replace(out, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


def onnx_predictions(onnx_file: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """The predicted class (uint8) of each of ``images`` (normalised) on ONNX Runtime's CPU provider."""
    from .latency import onnx_session

    session = onnx_session(onnx_file, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + PREDICTION_BATCH]})[0].argmax(1)
                           for i in range(0, len(images), PREDICTION_BATCH)]).astype(np.uint8)


def onnx_logits(onnx_file: Path, images: np.ndarray) -> np.ndarray:
    """The logits of ``images`` on ONNX Runtime (one thread)."""
    from .latency import onnx_session

    session = onnx_session(onnx_file, 1)
    return session.run(None, {session.get_inputs()[0].name: images})[0]
