"""The 2D U-Net: builder, losses and metrics, safe loading (.keras and legacy .h5), saving and the model card.

TensorFlow/Keras is imported lazily inside functions so that importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.engine.model_files import CARD_JSON, WEIGHTS_NAME, file_sha256, keras_module
from core.engine.preprocess import ORIGINAL_SPEC, PreprocessSpec
from core.errors import ModelError

N_CLASSES = 4
# Names of the metrics saved with a model trained by the original design (load without compiling).
ORIGINAL_METRIC_NAMES = (
    "dice_coef", "precision", "sensitivity", "specificity", "dice_coef_necrotic", "dice_coef_edema",
    "dice_coef_enhancing",
)


def build_unet(input_size: int = 128, n_channels: int = 2, base_filters: int = 32, depth: int = 4,
               dropout: float = 0.2, n_classes: int = N_CLASSES, seed: int | None = None) -> Any:
    """The original design's U-Net, with channels, width and depth as parameters.

    Defaults: 128x128x2 input; encoder blocks of two 3x3 ReLU convolutions with 2x2 max pooling, filters
    32-64-128-256; bottleneck of two 3x3 convolutions with 512 filters and dropout 0.2; decoder of 2x2
    transposed convolutions, skip concatenation and two 3x3 convolutions; 1x1 softmax over 4 classes;
    he-normal initialisation (about 7.76 M parameters).

    Returns:
        An uncompiled ``keras.Model`` mapping (N, size, size, C) to (N, size, size, n_classes) probabilities.
    """
    keras = keras_module()
    layers = keras.layers
    if input_size % (2**depth):
        raise ModelError(f"expected an input size divisible by 2**depth = {2**depth}, got {input_size}")
    init = keras.initializers.HeNormal(seed=seed)

    def conv_block(x: Any, filters: int, name: str) -> Any:
        for i in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                              name=f"{name}_conv{i}")(x)
        return x

    inputs = keras.Input((input_size, input_size, n_channels), name="image")
    skips = []
    x = inputs
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, base_filters * 2**depth, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, seed=seed, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", kernel_initializer=init,
                                   name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, f"dec{level}")
    outputs = layers.Conv2D(n_classes, 1, activation="softmax", kernel_initializer=init, name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"unet2d_{base_filters}x{depth}")


# ------------------------------------------------------------------------------------ losses and metrics ---

def get_custom_objects() -> dict[str, Any]:
    """Loss and metric functions, registered for Keras serialisation (needed only to resume training)."""
    keras = keras_module()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="brats")
    def soft_dice_loss(y_true: Any, y_pred: Any) -> Any:
        """1 - mean soft Dice over the tumour classes 1..3, computed over the whole batch."""
        axes = (0, 1, 2)
        inter = ops.sum(y_true * y_pred, axis=axes)
        denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return 1.0 - ops.mean(dice[1:])

    @keras.saving.register_keras_serializable(package="brats")
    def ce_dice_loss(y_true: Any, y_pred: Any) -> Any:
        ce = ops.mean(keras.losses.categorical_crossentropy(y_true, y_pred))
        return ce + soft_dice_loss(y_true, y_pred)

    def _class_dice(index: int, name: str) -> Any:
        @keras.saving.register_keras_serializable(package="brats", name=name)
        def metric(y_true: Any, y_pred: Any) -> Any:
            hard = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), index), "float32")
            t = y_true[..., index]
            inter = ops.sum(t * hard)
            return (2.0 * inter + 1e-6) / (ops.sum(t) + ops.sum(hard) + 1e-6)

        metric.__name__ = name
        return metric

    @keras.saving.register_keras_serializable(package="brats")
    def dice_coef(y_true: Any, y_pred: Any) -> Any:
        """The original design's overall soft Dice over all four classes."""
        inter = ops.sum(y_true * y_pred, axis=(0, 1, 2))
        denom = ops.sum(y_true, axis=(0, 1, 2)) + ops.sum(y_pred, axis=(0, 1, 2))
        return ops.mean((2.0 * inter + 1.0) / (denom + 1.0))

    return {
        "soft_dice_loss": soft_dice_loss,
        "ce_dice_loss": ce_dice_loss,
        "dice_coef": dice_coef,
        "dice_coef_necrotic": _class_dice(1, "dice_coef_necrotic"),
        "dice_coef_edema": _class_dice(2, "dice_coef_edema"),
        "dice_coef_enhancing": _class_dice(3, "dice_coef_enhancing"),
    }


def compile_model(model: Any, loss: str = "ce", learning_rate: float = 1e-3) -> Any:
    """Compile with Adam; ``loss`` is "ce" (the original categorical cross-entropy) or "ce_dice"."""
    keras = keras_module()
    objs = get_custom_objects()
    if loss == "ce":
        loss_fn: Any = "categorical_crossentropy"
    elif loss == "ce_dice":
        loss_fn = objs["ce_dice_loss"]
    else:
        raise ModelError(f"expected loss 'ce' or 'ce_dice', got {loss!r}")
    metrics = ["accuracy", objs["dice_coef"], objs["dice_coef_necrotic"], objs["dice_coef_edema"],
               objs["dice_coef_enhancing"]]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_fn, metrics=metrics)
    return model


# --------------------------------------------------------------------------------------------- loading ---

@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for prediction: the network (a Keras model, or ``core.engine.runtime.OnnxNetwork``), its
    preprocessing spec, name, Keras weight hash (the model's identity whatever the runtime), card, the
    post-processing and quality-flag settings saved beside it (defaults when absent), and the runtime in use."""

    model: Any
    spec: PreprocessSpec
    name: str
    sha256: str
    path: str
    card: dict = field(default_factory=dict)
    postprocess: Any = None  # core.engine.postprocess.PostprocessSpec
    quality: Any = None  # core.engine.quality.QualityModel
    runtime: str = "tensorflow"  # "onnxruntime" / "onnxruntime-int8": the exported network (core.engine.runtime)
    volume: Any = None  # core.engine.volume3d.VolumeNetwork: the 3-D context network, when the folder has one

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]


def resolve_weights(path: str | Path) -> tuple[Path, Path]:
    """(weights file, model folder) for a model folder or a .keras/.h5 file.

    Raises:
        ModelError: nothing loadable there.
    """
    p = Path(path)
    if p.is_dir():
        for name in (WEIGHTS_NAME, "model.h5"):
            if (p / name).is_file():
                return p / name, p
        raise ModelError(f"expected {WEIGHTS_NAME} or model.h5 in the model folder {p.name!r}, found neither")
    if p.is_file():
        if p.suffix.lower() not in {".keras", ".h5", ".hdf5"}:
            raise ModelError(f"expected a .keras or .h5 model file, got {p.name!r}")
        return p, p.parent
    raise ModelError(f"expected a model folder or file, got {str(p)!r} which does not exist")


def runs_without_tensorflow(path: str | Path, runtime: str | None = None) -> bool:
    """Whether ``load_model(path, runtime=runtime)`` runs the network in ONNX Runtime, never importing TensorFlow:
    a model folder whose card records a valid export of these very weights (int8 with runtime "onnx-int8").
    Hashes the weights file; raises nothing (False for anything ``load_model`` would refuse or load in Keras)."""
    from core.engine.runtime import runtime_preference, valid_export, valid_int8

    try:
        preference = runtime_preference(runtime)
        weights, folder = resolve_weights(path)
        if preference == "tensorflow" or weights.name != WEIGHTS_NAME:
            return False
        card = json.loads((folder / CARD_JSON).read_text(encoding="utf-8"))
        check = valid_int8 if preference == "onnx-int8" else valid_export
        return check(folder, card, file_sha256(weights)) is not None
    except (ModelError, ValueError, OSError):  # json.JSONDecodeError is a ValueError
        return False


def load_model(path: str | Path, spec: PreprocessSpec | None = None, runtime: str | None = None) -> LoadedModel:
    """Load a model for prediction: the exported ONNX network when valid, else Keras without compiling, in safe mode.

    ``path`` is a model folder (``model.keras`` + ``preprocess.json`` + ``model_card.json``, and ``model.onnx``
    when exported) or a single ``.keras``/``.h5`` file. A file without ``preprocess.json`` beside it is assumed
    to follow the original design (FLAIR + T1CE, slice-max scaling, whole slice at 128). Models saved by the
    original code, whose metrics are named ``dice_coef``, ``precision``, ``sensitivity``, ``specificity``,
    ``dice_coef_necrotic``, ``dice_coef_edema``, ``dice_coef_enhancing``, load because nothing is compiled.

    ``runtime`` ("auto", "onnx", "onnx-int8" or "tensorflow"; default ``$BRATS_RUNTIME`` or "auto"): "auto" runs
    ``model.onnx`` in ONNX Runtime (no TensorFlow import) when the card records it for these very Keras weights
    and its checksum matches (``core.engine.runtime.valid_export``), else Keras; "onnx-int8" runs the int8
    network (``core.engine.runtime.valid_int8``) or refuses.

    Raises:
        ModelError: missing file, not a model, an input/output shape that does not fit the spec, or
            runtime "onnx" / "onnx-int8" without a valid export.
    """
    from core.engine.runtime import load_onnx, runtime_preference, valid_export, valid_int8

    preference = runtime_preference(runtime)
    weights, folder = resolve_weights(path)
    if spec is None:
        spec = PreprocessSpec.load(folder) if (folder / "preprocess.json").is_file() else ORIGINAL_SPEC
    card: dict = {}
    card_path = folder / CARD_JSON
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            card = {}
    sha256 = file_sha256(weights)
    model: Any = None
    used = "tensorflow"
    if preference == "onnx-int8":
        int8_path = valid_int8(folder, card, sha256) if weights.name == WEIGHTS_NAME else None
        if int8_path is None:
            raise ModelError(f"expected a model.int8.onnx quantised from these weights in {folder.name!r} (its "
                             "checksum in the model card), found none: run python -m core export MODEL_DIR --int8 ...")
        model, used = load_onnx(int8_path), "onnxruntime-int8"
    elif preference != "tensorflow":
        onnx_path = valid_export(folder, card, sha256) if weights.name == WEIGHTS_NAME else None
        if onnx_path is not None:
            model, used = load_onnx(onnx_path), "onnxruntime"
        elif preference == "onnx":
            raise ModelError(f"expected a model.onnx exported from these weights in {folder.name!r} (its checksum "
                             "in the model card), found none: run python -m core export MODEL_DIR")
    if model is None:
        keras = keras_module()
        try:
            # safe_mode applies to .keras and legacy .h5 alike: a Lambda layer (Python code) is refused.
            model = keras.models.load_model(weights, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a file that is not a model
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            if "safe_mode" in str(err) or "Lambda" in str(err):
                raise ModelError(f"expected a Keras model without Python code in {weights.name!r}, got one with a "
                                 "Lambda layer or other code, refused in safe mode") from err
            raise ModelError(f"expected a Keras model in {weights.name!r}, got an unreadable file ({msg})") from err
    check_model_fits(model, spec)
    from core.engine.postprocess import PostprocessSpec
    from core.engine.quality import QualityModel
    from core.engine.volume3d import load_volume_network

    name = folder.name if weights.name in (WEIGHTS_NAME, "model.h5") else weights.stem
    volume = load_volume_network(folder, preference) if weights.name == WEIGHTS_NAME else None
    if volume is not None:  # the model's identity covers both networks and how they are combined
        fusion = json.dumps((volume.record or {}).get("fusion", {}), sort_keys=True)
        sha256 = hashlib.sha256(f"2d:{sha256}|3d:{volume.sha256}|fusion:{fusion}".encode()).hexdigest()
    return LoadedModel(model, spec, name, sha256, str(weights), card, PostprocessSpec.load(folder),
                       QualityModel.load(folder, trained_for_missing=spec.modality_dropout > 0), used, volume)


def _io_shapes(model: Any) -> tuple[tuple, tuple]:
    """(input shape, output shape) of a Keras model or an ``OnnxNetwork``, batch first."""
    from core.engine.runtime import OnnxNetwork

    if isinstance(model, OnnxNetwork):
        return model.input_shape, model.output_shape
    return tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)


def check_model_fits(model: Any, spec: PreprocessSpec) -> None:
    """Raise ModelError unless the model maps (N, size, size, C) to (N, size, size, 4)."""
    try:
        in_shape, out_shape = _io_shapes(model)
    except (AttributeError, IndexError) as err:
        raise ModelError("expected a functional Keras model with one input and one output") from err
    want_in = (spec.input_size, spec.input_size, spec.n_inputs)
    if len(in_shape) != 4 or tuple(in_shape[1:]) != want_in:
        raise ModelError(f"expected a model input of (batch, {want_in[0]}, {want_in[1]}, {want_in[2]}) for "
                         f"channels {list(spec.channels)} with {spec.context} context slice(s) each side, "
                         f"got {in_shape}")
    if len(out_shape) != 4 or out_shape[-1] != N_CLASSES:
        raise ModelError(f"expected a model output of (batch, H, W, {N_CLASSES}) classes, got {out_shape}")


def save_for_inference(model: Any, folder: str | Path, spec: PreprocessSpec) -> Path:
    """Save weights (without optimizer state) and the spec in ``folder``, each file written atomically."""
    import os
    import tempfile

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    keras = keras_module()
    # A fresh, uncompiled copy: the saved file then holds no optimizer state (a third of the size).
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".keras", dir=out)
    os.close(fd)
    try:
        clean.save(tmp)
        os.replace(tmp, out / WEIGHTS_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    spec.save(out)
    return out / WEIGHTS_NAME


def list_models(models_dir: str | Path) -> list[dict]:
    """Model folders under ``models_dir`` with their card (name, path, card dict)."""
    base = Path(models_dir)
    found: list[dict] = []
    if not base.is_dir():
        return found
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if (d / WEIGHTS_NAME).is_file() or (d / "model.h5").is_file():
            card = {}
            if (d / CARD_JSON).is_file():
                try:
                    card = json.loads((d / CARD_JSON).read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    card = {}
            found.append({"name": d.name, "path": str(d), "card": card})
    return found
