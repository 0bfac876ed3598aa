"""The 3-D context network: a small 3-D U-Net that sees the whole brain box at about 2 mm.

It shares the 2-D network's preparation (``core.engine.preprocess.prepare_case``: the same normalisation and
the same square in-plane brain box resized to S x S), so it adds no second pass over the images:

- input: the prepared axial slices (Z, S, S, C) of the brain's axial range, pairs of slices averaged (2 mm
  along Z), resized in-plane to ``VOLUME_SIDE`` and padded (or, for a brain longer than 160 mm, cut: those
  slices are left to the 2-D network) along Z to ``VOLUME_DEPTH`` slices around the brain's centre: a (1, VOLUME_SIDE, VOLUME_SIDE, VOLUME_DEPTH, C) float32 volume, axes (X, Y, Z) as the
  prepared slices hold them (rows = X of the RAS grid, columns = Y);
- output: three overlapping sigmoid region probabilities (WT, TC, ET) per voxel, the nnU-Net way for BraTS,
  so that the hierarchy ET in TC in WT is learnt directly;
- back: ``to_slices`` brings them to the prepared slices' (Z, S, S, 3) frame, where they are averaged with the
  2-D network's regions (``core.engine.inference``).

Region probabilities <-> class probabilities: P(WT) = 1 - P(bg), P(TC) = P(NCR) + P(ET), P(ET) = P(ET); and
back, after clipping to ET <= TC <= WT, P(ET), P(NCR) = TC - ET, P(ED) = WT - TC, P(bg) = 1 - WT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import ModelError

VOLUME_SIDE = 96  # in-plane voxels of the 3-D input (the brain box, about 1.6-2 mm per voxel)
VOLUME_DEPTH = 80  # axial voxels of the 3-D input: 160 mm of brain at 2 mm
REGION_NAMES = ("WT", "TC", "ET")
VOLUME_DIR = "volume3d"  # a model folder's sub-folder holding the 3-D network (model.keras, model.onnx)


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the 3-D input sits in the prepared slices.

    Attributes:
        z0, z1: the prepared slices' axial range used (brain slices, even length), in slice indices.
        pad0: how many 2 mm slices of padding precede the first pair in the input (negative: pairs cut off).
        side: the prepared slices' in-plane size S.
    """

    z0: int
    z1: int
    pad0: int
    side: int


def volume_input(slices: np.ndarray, brain_z: np.ndarray, side: int = VOLUME_SIDE, depth: int = VOLUME_DEPTH
                 ) -> tuple[np.ndarray, VolumeGeometry]:
    """The 3-D network's input from prepared slices.

    Args:
        slices: (Z, S, S, C) prepared slices (float16 or float32); brain_z: (Z,) bool, slices holding brain.

    Returns:
        (1, side, side, depth, C) float32 and the geometry to go back (``to_slices``).
    """
    nz, s, _, nc = slices.shape
    zs = np.flatnonzero(brain_z)
    if zs.size == 0:
        return np.zeros((1, side, side, depth, nc), dtype=np.float32), VolumeGeometry(0, 0, 0, s)
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    if (z1 - z0) % 2:
        if z1 < nz:
            z1 += 1
        else:
            z0 = max(z0 - 1, 0)
    block = np.asarray(slices[z0:z1], dtype=np.float32)
    if block.shape[0] % 2:  # a single odd slice at the grid's edge: repeat it
        block = np.concatenate([block, block[-1:]], axis=0)
    pairs = 0.5 * (block[0::2] + block[1::2])  # (P, S, S, C) at 2 mm
    n_pairs = pairs.shape[0]
    small = np.empty((n_pairs, side, side, nc), dtype=np.float32)
    for k in range(n_pairs):
        small[k] = cv2.resize(pairs[k], (side, side), interpolation=cv2.INTER_AREA).reshape(side, side, nc)
    pad0 = (depth - n_pairs) // 2
    out = np.zeros((depth, side, side, nc), dtype=np.float32)
    src0, dst0 = max(-pad0, 0), max(pad0, 0)
    n = min(n_pairs - src0, depth - dst0)
    out[dst0 : dst0 + n] = small[src0 : src0 + n]
    return np.ascontiguousarray(np.moveaxis(out, 0, 2))[None], VolumeGeometry(z0, z1, pad0, s)


def to_slices(regions: np.ndarray, geom: VolumeGeometry, n_slices: int) -> np.ndarray:
    """(side, side, depth, K) network output -> (n_slices, S, S, K) float32 on the prepared slices' frame:
    linear along Z between 2 mm slice centres, bilinear in-plane; 0 outside the brain's axial range, and NaN on
    brain slices the input had to leave out (a brain longer than ``depth`` 2 mm slices): the network said nothing
    there."""
    side, _, depth, k = regions.shape
    out = np.zeros((n_slices, geom.side, geom.side, k), dtype=np.float32)
    if geom.z1 <= geom.z0:
        return out
    vol = np.moveaxis(np.asarray(regions, dtype=np.float32), 2, 0)  # (depth, side, side, K)
    z = np.arange(geom.z0, geom.z1)
    # slice z of the prepared stack lies at pair coordinate (z - z0 - 0.5) / 2, input index pad0 + that
    raw = geom.pad0 + (z - geom.z0 - 0.5) / 2.0
    covered = (raw >= -0.25) & (raw <= depth - 0.75)  # the centres of a pair's two slices lie at +-0.25
    pos = np.clip(raw, 0, depth - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, depth - 1)
    w = (pos - lo).astype(np.float32)
    cache: dict[int, np.ndarray] = {}

    def up(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = cv2.resize(vol[i], (geom.side, geom.side), interpolation=cv2.INTER_LINEAR).reshape(
                geom.side, geom.side, k)
        return cache[i]

    for j, zz in enumerate(z):
        out[zz] = (1.0 - w[j]) * up(int(lo[j])) + w[j] * up(int(hi[j])) if covered[j] else np.nan
    return out


def regions_from_classes(probs: np.ndarray) -> np.ndarray:
    """(..., 4) class probabilities (bg, NCR, ED, ET) -> (..., 3) region probabilities (WT, TC, ET)."""
    p = np.asarray(probs, dtype=np.float32)
    return np.stack([1.0 - p[..., 0], p[..., 1] + p[..., 3], p[..., 3]], axis=-1)


def classes_from_regions(regions: np.ndarray) -> np.ndarray:
    """(..., 3) region probabilities (WT, TC, ET) -> (..., 4) class probabilities (bg, NCR, ED, ET) that sum to
    1, after clipping to ET <= TC <= WT (the BraTS hierarchy)."""
    r = np.clip(np.asarray(regions, dtype=np.float32), 0.0, 1.0)
    wt = r[..., 0]
    tc = np.minimum(r[..., 1], wt)
    et = np.minimum(r[..., 2], tc)
    return np.stack([1.0 - wt, tc - et, wt - tc, et], axis=-1)


def region_targets(classes: np.ndarray) -> np.ndarray:
    """(Z, S, S) class indices 0..3 -> (Z, S, S, 3) float32 region masks (WT, TC, ET)."""
    c = np.asarray(classes)
    return np.stack([c > 0, (c == 1) | (c == 3), c == 3], axis=-1).astype(np.float32)


def volume_targets(classes: np.ndarray, brain_z: np.ndarray, side: int = VOLUME_SIDE, depth: int = VOLUME_DEPTH
                   ) -> np.ndarray:
    """Training targets on the 3-D input's grid: (side, side, depth, 3) float32 region fractions in [0, 1]
    (the region masks of the prepared (Z, S, S) classes taken through ``volume_input``'s averaging)."""
    vol, _ = volume_input(region_targets(classes), brain_z, side, depth)
    return np.clip(vol[0], 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- network ---

def build_unet3d(n_channels: int = 4, base_filters: int = 8, depth: int = 4, side: int = VOLUME_SIDE,
                 n_slices: int = VOLUME_DEPTH, seed: int | None = None, fixed_shape: bool = False) -> Any:
    """A 3-D U-Net with region outputs: blocks of two 3x3x3 convolutions with LeakyReLU and no normalisation
    layers (batch statistics of 2 patches are too noisy), 2x2x2 max pooling, transposed-convolution upsampling
    with skips, and a 1x1x1 sigmoid over (WT, TC, ET).

    Fully convolutional: trained on patches, run on the whole (side, side, n_slices) volume. With
    ``fixed_shape`` the input shape is fixed to that volume (for export).

    Returns:
        An uncompiled ``keras.Model`` (N, X, Y, Z, C) -> (N, X, Y, Z, 3).
    """
    from core.engine.model_files import keras_module

    keras = keras_module()
    layers = keras.layers
    step = 2**depth
    if side % step or n_slices % step:
        raise ModelError(f"expected a volume divisible by 2**depth = {step}, got {side}x{side}x{n_slices}")
    init = keras.initializers.HeNormal(seed=seed)
    shape = (side, side, n_slices, n_channels) if fixed_shape else (None, None, None, n_channels)
    inputs = keras.Input(shape, name="volume")

    def block(x: Any, filters: int, name: str) -> Any:
        for i in (1, 2):
            x = layers.Conv3D(filters, 3, padding="same", kernel_initializer=init, name=f"{name}_conv{i}")(x)
            x = layers.LeakyReLU(0.01, name=f"{name}_act{i}")(x)
        return x

    skips = []
    x = inputs
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool{level}")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.Conv3DTranspose(base_filters * 2**level, 2, strides=2, padding="same", kernel_initializer=init,
                                   name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv3D(len(REGION_NAMES), 1, activation="sigmoid", name="regions")(x)
    return keras.Model(inputs, outputs, name=f"unet3d_{base_filters}x{depth}")


def region_loss() -> Any:
    """Binary cross-entropy + soft Dice per region (WT, TC, ET) over the batch, as nnU-Net trains for BraTS."""
    from core.engine.model_files import keras_module

    keras = keras_module()
    ops = keras.ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        p = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        axes = (0, 1, 2, 3)
        inter = ops.sum(y_true * y_pred, axis=axes)
        denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return bce + 1.0 - ops.mean(dice)

    return loss


# ---------------------------------------------------------------------------------------------- loading ---

@dataclass(frozen=True, eq=False)
class VolumeNetwork:
    """The 3-D network of a model folder (``<model>/volume3d/``), ready to run, with its fusion settings.

    Attributes:
        network: callable (1, X, Y, Z, C) float32 -> (1, X, Y, Z, 3) region probabilities (an
            ``core.engine.runtime.OnnxNetwork`` or a Keras model).
        sha256: SHA-256 of its ``model.keras`` (its identity whatever the runtime).
        runtime: "onnxruntime" or "tensorflow".
        weight: weight of its regions in the average with the 2-D network's (0..1).
        cascade_threshold: the 2-D network runs only on slices (and ``margin_slices`` around them) where the
            3-D network's whole-tumour probability exceeds this somewhere; 0 runs it on every brain slice.
        margin_slices: see ``cascade_threshold``.
        mirror: also run it on the left-right mirrored input and average (always, not only with TTA).
        record: ``volume3d.json`` (how it was trained, its export, its fusion settings).
    """

    network: Any
    sha256: str
    runtime: str
    weight: float = 0.5
    cascade_threshold: float = 0.0
    margin_slices: int = 4
    mirror: bool = False
    record: dict | None = None

    def regions(self, x: np.ndarray, flip: bool = False) -> np.ndarray:
        """(1, X, Y, Z, C) input -> (X, Y, Z, 3) float32 region probabilities; with ``flip`` the mean with the
        left-right mirrored input's (mirrored back)."""
        outs = [np.asarray(self._run(x), dtype=np.float32)[0]]
        if flip:
            outs.append(np.asarray(self._run(np.ascontiguousarray(x[:, ::-1])), dtype=np.float32)[0, ::-1])
        return outs[0] if len(outs) == 1 else 0.5 * (outs[0] + outs[1])

    def _run(self, x: np.ndarray) -> Any:
        if self.runtime == "tensorflow":
            return self.network(np.ascontiguousarray(x, dtype=np.float32), training=False)
        return self.network(x)

    @property
    def fusion_label(self) -> str:
        """Readable description, e.g. "2-D + 3-D networks (3-D weight 0.5)"."""
        return f"2-D + 3-D networks (3-D weight {self.weight:g})"


def load_volume_network(model_folder: Path, preference: str = "auto") -> VolumeNetwork | None:
    """The 3-D network of ``model_folder/volume3d`` or None when the folder has none.

    Runs ``model.onnx`` in ONNX Runtime when ``volume3d.json`` records it for these very weights and its checksum
    matches (and ``preference`` is not "tensorflow"); otherwise Keras in safe mode.

    Raises:
        ModelError: the folder exists but its files cannot be read as a 3-D network.
    """
    import json

    from core.engine.model_files import file_sha256, keras_module
    from core.engine.runtime import ONNX_NAME, load_onnx

    folder = Path(model_folder) / VOLUME_DIR
    weights = folder / "model.keras"
    if not weights.is_file():
        return None
    try:
        record = json.loads((folder / "volume3d.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"expected a readable {VOLUME_DIR}/volume3d.json beside the 3-D network, got {err}") from err
    sha = file_sha256(weights)
    fusion = record.get("fusion", {}) if isinstance(record, dict) else {}
    entry = record.get("onnx") if isinstance(record, dict) else None
    network: Any = None
    runtime = "tensorflow"
    if preference != "tensorflow" and isinstance(entry, dict) and entry.get("keras_sha256") == sha \
            and (folder / ONNX_NAME).is_file() and entry.get("sha256") == file_sha256(folder / ONNX_NAME):
        network, runtime = load_onnx(folder / ONNX_NAME, arena=False), "onnxruntime"
    if network is None:
        try:
            network = keras_module().models.load_model(weights, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a file that is not a model
            raise ModelError(f"expected a Keras 3-D network in {VOLUME_DIR}/model.keras, got an unreadable file "
                             f"({type(err).__name__})") from err
    return VolumeNetwork(network, sha, runtime, float(fusion.get("weight", 0.5)),
                         float(fusion.get("cascade_threshold", 0.0)), int(fusion.get("margin_slices", 4)),
                         bool(fusion.get("mirror", False)), record)


def export_volume_network(model_folder: Path) -> dict[str, Any]:
    """Export ``model_folder/volume3d/model.keras`` to ``model.onnx`` beside it (fixed input (N, side, side,
    depth, C)) and record the export with both checksums in ``volume3d.json``. Returns the entry."""
    import json

    from core.engine.model_files import file_sha256, keras_module
    from core.engine.runtime import export_onnx

    folder = Path(model_folder) / VOLUME_DIR
    record = json.loads((folder / "volume3d.json").read_text(encoding="utf-8"))
    loaded = keras_module().models.load_model(folder / "model.keras", compile=False, safe_mode=True)
    fixed = build_unet3d(len(record["channels"]), int(record["base_filters"]), int(record["levels"]),
                         fixed_shape=True)
    fixed.set_weights(loaded.get_weights())
    entry = {**export_onnx(fixed, folder), "keras_sha256": file_sha256(folder / "model.keras")}
    record["onnx"] = entry
    from core.data.io import atomic_write_bytes

    atomic_write_bytes(folder / "volume3d.json", json.dumps(record, indent=2).encode())
    return entry
