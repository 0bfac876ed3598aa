"""CPU inference without TensorFlow: the Keras U-Net exported to ONNX and run in ONNX Runtime.

Training stays on TensorFlow/Keras. At the end of training (and with ``python -m core export MODEL_DIR`` for an
existing model) the network is converted with tf2onnx (opset 17) to ``model.onnx`` beside ``model.keras``; the
model card records both files' SHA-256 and the largest probability difference measured at export. Loading
(``core.engine.model.load_model``) uses the ONNX file only when both checksums match the card, so a retrained
``model.keras`` never runs with a stale export; otherwise it falls back to TensorFlow.

Arrays: batches are (N, S, S, C) float32 network inputs (S = the spec's input size, C = ``spec.n_inputs``);
outputs are (N, S, S, 4) float32 class probabilities (background, NCR, ED, ET).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.engine.model_files import file_sha256
from core.errors import ModelError

ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
OPSET = 17
# Largest |p_onnx - p_keras| accepted at export (the equivalence test asks for 1e-3 on a real case).
EXPORT_TOLERANCE = 1e-3
RUNTIMES = ("auto", "onnx", "onnx-int8", "tensorflow")
# Calibration of the int8 network: every CALIBRATION_STEP-th brain slice of each calibration case.
CALIBRATION_STEP = 4
INT8_METHOD = ("static quantisation (ONNX Runtime, QDQ): int8 weights per output channel, uint8 activations, "
               "min-max calibration")
RUNTIME_ENV = "BRATS_RUNTIME"


def runtime_preference(value: str | None = None) -> str:
    """The runtime asked for: ``value``, else ``$BRATS_RUNTIME``, else "auto" (ONNX when valid, else TensorFlow).

    "onnx-int8" asks for the int8 network (``quantize_model_folder``), an opt-in: its labels differ from the
    fp32 network's (see the model card's cross-validation).

    Raises:
        ModelError: a value other than auto, onnx, onnx-int8 or tensorflow.
    """
    text = (value if value is not None else os.environ.get(RUNTIME_ENV, "auto")).strip().lower() or "auto"
    if text not in RUNTIMES:
        raise ModelError(f"expected a runtime among {', '.join(RUNTIMES)}, got {text!r}")
    return text


@dataclass(frozen=True, eq=False)
class OnnxNetwork:
    """An ONNX Runtime session standing in for the Keras model at inference.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        input_name, output_name: tensor names of the image input and the probability output.
        input_shape, output_shape: (batch, S, S, C) and (batch, S, S, 4); batch is None (dynamic).
        path: the ONNX file.
    """

    session: Any
    input_name: str
    output_name: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    path: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, C) float32 -> (N, S, S, 4) float32 probabilities."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


def _dim(d: Any) -> int | None:
    return int(d) if isinstance(d, (int, np.integer)) else None


def load_onnx(path: str | Path, threads: int | None = None, arena: bool = True) -> OnnxNetwork:
    """Open an exported network in ONNX Runtime (CPU).

    Args:
        path: the ``model.onnx`` file.
        threads: intra-op threads (default: ``$BRATS_RUNTIME_THREADS`` or ONNX Runtime's choice, all cores);
            batch workers pass cores // workers so that processes do not oversubscribe the CPU.
        arena: keep ONNX Runtime's CPU memory arena (fast for a network run many times, as the 2-D one is per
            batch); False returns a run's buffers when it ends (the 3-D network runs once per case, and its
            arena would otherwise hold its largest activations while the 2-D network runs).

    Raises:
        ModelError: onnxruntime is not installed, or the file is not a loadable ONNX model.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError("expected the onnxruntime package for the exported model, it is not installed") from err
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: on a CPU shared by app sessions and batch workers spinning
    # only burns cores that others need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not arena:
        opts.enable_cpu_mem_arena = False
    if threads is None:
        env = os.environ.get("BRATS_RUNTIME_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ModelError(f"expected an ONNX model in {Path(path).name!r}, got an unreadable file ({msg})") from err
    inp, out = session.get_inputs(), session.get_outputs()
    if len(inp) != 1 or len(out) != 1:
        raise ModelError(f"expected an ONNX model with one input and one output, got {len(inp)} and {len(out)}")
    return OnnxNetwork(session, inp[0].name, out[0].name, tuple(_dim(d) for d in inp[0].shape),
                       tuple(_dim(d) for d in out[0].shape), str(path))


_EXPORT_LOCK = threading.Lock()


def export_onnx(model: Any, folder: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Convert a Keras model to ``folder/model.onnx`` with tf2onnx and check it against Keras.

    The check runs both on one fixed batch (seeded normal noise, 4 slices; a guard against a broken conversion,
    not an accuracy figure: the equivalence test on a real case is that) and refuses an export whose
    probabilities differ by more than ``EXPORT_TOLERANCE``.

    Returns:
        ``{"file", "sha256", "opset", "tf2onnx_version", "onnxruntime_version", "export_check_max_abs_diff"}``
        for the model card.

    Raises:
        ModelError: tf2onnx/onnxruntime missing, the conversion failed, or the outputs differ.
    """
    try:
        import onnxruntime as ort
        import tensorflow as tf
        import tf2onnx
    except ImportError as err:
        raise ModelError(f"expected tf2onnx and onnxruntime for the ONNX export, missing ({err})") from err
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(model.inputs[0].shape)
    spec = (tf.TensorSpec((None, *shape[1:]), tf.float32, name="image"),)
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".onnx", dir=out)
    os.close(fd)
    try:
        with _EXPORT_LOCK:  # tf2onnx keeps global graph state
            try:
                tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=tmp)
            except Exception as err:
                msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                raise ModelError(f"expected tf2onnx to convert the model, it failed ({msg})") from err
        x = np.random.default_rng(0).normal(size=(4, *shape[1:])).astype(np.float32)
        ref = np.asarray(model(x, training=False), dtype=np.float32)
        got = load_onnx(tmp)(x)
        diff = float(np.max(np.abs(got - ref)))
        if not diff <= EXPORT_TOLERANCE:
            raise ModelError(f"expected the ONNX export to match Keras within {EXPORT_TOLERANCE}, got a largest "
                             f"probability difference of {diff:.2e}")
        os.replace(tmp, out / ONNX_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"file": ONNX_NAME, "sha256": file_sha256(out / ONNX_NAME), "opset": opset,
            "tf2onnx_version": tf2onnx.__version__, "onnxruntime_version": ort.__version__,
            "export_check_max_abs_diff": float(f"{diff:.3g}")}


def valid_export(folder: str | Path, card: dict, weights_sha256: str) -> Path | None:
    """``folder/model.onnx`` when the card records it for these Keras weights and its checksum matches, else None."""
    entry = card.get("onnx") if isinstance(card, dict) else None
    path = Path(folder) / ONNX_NAME
    if not isinstance(entry, dict) or not path.is_file():
        return None
    if entry.get("keras_sha256") != weights_sha256:
        return None
    return path if entry.get("sha256") == file_sha256(path) else None


# ------------------------------------------------------------------------------------------- int8 ---

def calibration_batches(cases: Any, spec: Any, batch: int = 8) -> list[np.ndarray]:
    """Network inputs (batch, S, S, C) float32 for int8 calibration: every ``CALIBRATION_STEP``-th brain slice of
    each case (``core.data.cases.Case``), prepared as at inference (a case's last batch may be smaller)."""
    from core.engine.preprocess import prepare_case

    out: list[np.ndarray] = []
    for case in cases:
        prep = prepare_case(case, spec)
        zs = np.flatnonzero(prep.brain_z)[::CALIBRATION_STEP]
        out += [prep.network_input(zs[i : i + batch]) for i in range(0, len(zs), batch)]
    return out


def quantize_int8(folder: str | Path, batches: list[np.ndarray]) -> dict[str, Any]:
    """Quantise ``folder/model.onnx`` to ``folder/model.int8.onnx`` (``INT8_METHOD``) calibrated on ``batches``.

    Returns:
        ``{"file", "sha256", "onnx_sha256", "method", "calibration_slices", "onnxruntime_version"}``.

    Raises:
        ModelError: no ``model.onnx``, no calibration batch, or the quantisation failed.
    """
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise ModelError(f"expected onnxruntime's quantisation tools (and onnx), missing ({err})") from err
    out = Path(folder)
    src = out / ONNX_NAME
    if not src.is_file():
        raise ModelError(f"expected {ONNX_NAME} in {out.name!r} to quantise, found none: run python -m core export")
    if not batches:
        raise ModelError("expected calibration slices for the int8 quantisation, got none")
    input_name = load_onnx(src).input_name

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: np.ascontiguousarray(b, dtype=np.float32)}

    with tempfile.TemporaryDirectory(dir=out, prefix=".int8.") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / INT8_NAME
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as err:  # onnxruntime raises its own types
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ModelError(f"expected the int8 quantisation to succeed, it failed ({msg})") from err
        load_onnx(q)  # refuse a file ONNX Runtime cannot open
        os.replace(q, out / INT8_NAME)
    return {"file": INT8_NAME, "sha256": file_sha256(out / INT8_NAME), "onnx_sha256": file_sha256(src),
            "method": INT8_METHOD, "calibration_slices": int(sum(len(b) for b in batches)),
            "onnxruntime_version": ort.__version__}


def valid_int8(folder: str | Path, card: dict, weights_sha256: str) -> Path | None:
    """``folder/model.int8.onnx`` when the card records it, quantised from the valid ``model.onnx`` of these Keras
    weights, and its checksum matches; else None."""
    entry = card.get("onnx_int8") if isinstance(card, dict) else None
    path = Path(folder) / INT8_NAME
    fp32 = valid_export(folder, card, weights_sha256)
    if not isinstance(entry, dict) or not path.is_file() or fp32 is None:
        return None
    if entry.get("onnx_sha256") != card["onnx"].get("sha256"):
        return None
    return path if entry.get("sha256") == file_sha256(path) else None
