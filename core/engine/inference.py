"""Whole-volume and single-slice prediction with a progress callback, optional flip TTA and uncertainty.

Every axial slice that holds brain is predicted (slices without brain are background without running the
network). Probabilities are resized back to the native grid first, then the labels are taken. Results are on
the case's RAS grid; ``core.data.io.save_like`` writes them back in the input's own geometry.

A model with a 3-D context network (``core.engine.volume3d``) runs it first on the whole brain box; its region
probabilities are averaged with the 2-D network's on each slice (weight from the model's ``volume3d.json``),
decoded as BraTS regions, and the 2-D network runs only on the slices near the 3-D network's tumour (the cascade);
other brain slices take the 3-D answer.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.data.cases import Case
from core.engine.model import LoadedModel
from core.engine.postprocess import PostprocessSpec, apply, refine
from core.engine.preprocess import (
    Prepared,
    classes_to_labels,
    prepare_case,
    probabilities_in_box,
    probabilities_to_grid,
)
from core.engine.quality import QualityFlag, QualityModel, flag, intensity_quantiles, measure
from core.engine.volume3d import classes_from_regions, regions_from_classes, to_slices, volume_input

ProgressFn = Callable[[float, str], None]
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_FORWARD: dict[int, Callable[[np.ndarray], Any]] = {}
_F16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal float16, about 6.1e-5


@dataclass(frozen=True, eq=False)
class Prediction:
    """A model's output for one case on the case's RAS grid.

    Attributes:
        labels: (X, Y, Z) uint8 labels 0/1/2/4.
        probabilities: (X, Y, Z, 4) float16 class probabilities (background, NCR, ED, ET); a view, not
            C-contiguous.
        uncertainty: (X, Y, Z) float16 normalised predictive entropy in [0, 1] (TTA only), else None: of the 2-D
            network's flips (0 on slices a model's cascade gives to its 3-D network alone).
        model_name, model_sha256: the model that made it.
        tta: whether flip test-time augmentation was used.
        elapsed_s: wall time of the prediction in seconds.
        quality: the quality flag (``core.engine.quality``): "ok" or "review" with reasons.
        missing: the model's modalities the case lacked (zero-filled).
        postprocess: readable name of the post-processing applied to the labels.
        runtime: the runtime that ran the network ("onnxruntime", "onnxruntime-int8", "tensorflow"; "" unknown).
        created_utc: when the prediction was made, ISO 8601 UTC to the second ("" unknown).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray | None
    model_name: str
    model_sha256: str
    tta: bool
    elapsed_s: float
    quality: QualityFlag | None = None
    missing: tuple[str, ...] = ()
    postprocess: str = "argmax"
    runtime: str = ""
    created_utc: str = ""


def _lock_for(loaded: LoadedModel) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(loaded.model), threading.Lock())


def _forward_for(loaded: LoadedModel) -> Callable[[np.ndarray], Any]:
    """The network itself for an ONNX export; for Keras the forward pass as a ``tf.function``, built once per
    model (a graph: measured about 17% faster per case than eager calls on 2 CPU cores). It holds the model
    weakly, so an evicted model can be freed."""
    model = loaded.model
    from core.engine.runtime import OnnxNetwork

    if isinstance(model, OnnxNetwork):  # ONNX Runtime: no TensorFlow in the loop
        return model
    with _LOCKS_GUARD:
        fn = _FORWARD.get(id(model))
        if fn is None:
            import tensorflow as tf

            ref = weakref.ref(model)
            fn = tf.function(lambda batch: ref()(batch, training=False),  # type: ignore[misc]  # alive while fn is
                             reduce_retracing=True)
            _FORWARD[id(model)] = fn
            weakref.finalize(model, _FORWARD.pop, id(model), None)
        return fn


def run_network(loaded: LoadedModel, batch: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities for a (N, S, S, C) batch: (N, S, S, 4) float32, and with TTA the per-pixel
    normalised entropy (N, S, S) of the mean over identity and flips along each in-plane axis."""
    views = [batch]
    if tta:
        views += [batch[:, ::-1], batch[:, :, ::-1], batch[:, ::-1, ::-1]]
    outs = []
    forward = _forward_for(loaded)
    with _lock_for(loaded):
        for i, v in enumerate(views):
            p = np.asarray(forward(np.ascontiguousarray(v, dtype=np.float32)), dtype=np.float32)
            if i == 1:
                p = p[:, ::-1]
            elif i == 2:
                p = p[:, :, ::-1]
            elif i == 3:
                p = p[:, ::-1, ::-1]
            outs.append(p)
    mean = np.mean(outs, axis=0) if len(outs) > 1 else outs[0]
    if not tta:
        return mean, None
    ent = -np.sum(mean * np.log(np.clip(mean, 1e-7, 1.0)), axis=-1) / np.log(mean.shape[-1])
    return mean, np.clip(ent, 0.0, 1.0).astype(np.float32)


def predict_case(loaded: LoadedModel, case: Case, tta: bool = False, progress: ProgressFn | None = None,
                 batch_size: int = 16, prepared: Prepared | None = None) -> Prediction:
    """Segment every axial slice of a case.

    Args:
        loaded: model and its preprocessing spec.
        case: the case; must hold the model's input modalities.
        tta: average identity and flips, and return an uncertainty map.
        progress: called with (fraction done in [0, 1], message).
        batch_size: slices per network call.
        prepared: the case already prepared with ``loaded.spec`` (saves a second preparation).

    Raises:
        CaseError: a needed modality is missing.
    """
    started = time.perf_counter()
    prep = prepared if prepared is not None else prepare_case(case, loaded.spec)
    nx, ny, nz = prep.grid_shape
    # Filled slice by slice on (Z, X, Y, ...) buffers (contiguous writes), returned as (X, Y, Z, ...) views.
    # Background outside the crop box and on slices without brain; the network fills the box of the others.
    probs_z = np.empty((nz, nx, ny, 4), dtype=np.float16)
    probs_z[...] = (1.0, 0.0, 0.0, 0.0)
    classes_z = np.zeros((nz, nx, ny), dtype=np.uint8)
    x0, x1, y0, y1 = prep.box
    unc_z = np.zeros((nz, nx, ny), dtype=np.float16) if tta else None
    zs = np.flatnonzero(prep.brain_z)
    volume = getattr(loaded, "volume", None)
    regions3d: np.ndarray | None = None
    agree = np.zeros(3, dtype=np.int64)  # whole tumour of the 2-D and the 3-D network: |both|, |2-D|, |3-D|
    if volume is not None and zs.size:
        if progress is not None:
            progress(0.0, "3-D context network")
        vol_in, geom = volume_input(prep.slices, prep.brain_z)
        # (Z, S, S, 3) on the slices' frame, float16 (memory: the case's peak is the limit that matters)
        regions3d = to_slices(volume.regions(vol_in, flip=tta or volume.mirror), geom, nz).astype(np.float16)
        del vol_in
        from core.engine.allocator import trim

        trim()  # the 3-D run's buffers go back to the system before the 2-D network runs: a lower peak RSS
        zs_3d_only = zs
        zs = cascade_slices(regions3d, prep.brain_z, volume.cascade_threshold, volume.margin_slices)
        for z in np.setdiff1d(zs_3d_only, zs):  # brain slices the 2-D network is not run on: the 3-D answer
            _store(probs_z, classes_z, z, classes_from_regions(regions3d[z].astype(np.float32)), prep.box, regions=True)
            agree[2] += int(np.count_nonzero(regions3d[z, ..., 0] > 0.5))  # no 2-D tumour on these slices
    n_batches = max(1, int(np.ceil(len(zs) / batch_size)))
    for b, (sel, p, e) in enumerate(_network_batches(loaded, prep, zs, batch_size, tta)):
        for k, z in enumerate(sel):
            if regions3d is not None and volume is not None and not np.isnan(regions3d[z, 0, 0, 0]):
                wt2, wt3 = p[k][..., 0] < 0.5, regions3d[z, ..., 0] > 0.5
                agree += (np.count_nonzero(wt2 & wt3), np.count_nonzero(wt2), np.count_nonzero(wt3))
                fused = (1.0 - volume.weight) * regions_from_classes(p[k]) + volume.weight * regions3d[z].astype(
                    np.float32)
                _store(probs_z, classes_z, z, classes_from_regions(fused), prep.box, regions=True)
            else:  # a 2-D model, or a slice the 3-D input left out: the 2-D network alone, decoded as the model does
                _store(probs_z, classes_z, z, p[k], prep.box, regions=regions3d is not None)
            if unc_z is not None and e is not None:
                ent = _entropy_to_grid(e[k], prep.box, (nx, ny))
                ent[ent < _F16_TINY] = 0.0
                unc_z[z] = ent
        if progress is not None:
            progress((b + 1) / n_batches, f"segmented {min((b + 1) * batch_size, len(zs))} of {len(zs)} slices")
    if progress is not None and zs.size == 0:
        progress(1.0, "no slice holds brain: all background" if not prep.brain_z.any() else
                 "the 3-D network found no tumour: the 2-D network was not needed")
    probs = np.moveaxis(probs_z, 0, 2)
    post: PostprocessSpec = loaded.postprocess or PostprocessSpec()
    if regions3d is not None or post.decoding == "argmax":  # already decoded slice by slice
        labels = refine(np.ascontiguousarray(np.moveaxis(classes_to_labels(classes_z), 0, 2)), case.spacing_mm, post,
                        probs)
    else:
        labels = apply(probs, case.spacing_mm, post)
    unc = np.moveaxis(unc_z, 0, 2) if unc_z is not None else None
    agreement = None
    if regions3d is not None:  # Dice of the two networks' whole tumours on the network's frame (1 when both empty)
        agreement = 1.0 if agree[1] + agree[2] == 0 else float(2 * agree[0] / (agree[1] + agree[2]))
    quality = assess(loaded, case, prep, labels, probs, agreement)
    for arr in (labels, probs, unc):
        if arr is not None:
            arr.setflags(write=False)
    # The int8 network's labels differ from the model's (see its card): the name says so wherever it is shown.
    name = f"{loaded.name} (int8 network)" if loaded.runtime == "onnxruntime-int8" else loaded.name
    label = post.label if volume is None else f"{volume.fusion_label}, regions, {post.label.partition(', ')[2] or 'no rules'}"
    from datetime import UTC, datetime

    return Prediction(labels, probs, unc, name, loaded.sha256, tta, time.perf_counter() - started,
                      quality, prep.missing, label, str(getattr(loaded, "runtime", "") or ""),
                      datetime.now(UTC).isoformat(timespec="seconds"))


def _store(probs_z: np.ndarray, classes_z: np.ndarray, z: int, p: np.ndarray, box: tuple[int, int, int, int],
           regions: bool) -> None:
    """Write one slice's (S, S, 4) class probabilities into the crop box of ``probs_z[z]`` (float16) and its
    classes into ``classes_z[z]``: the argmax, or with ``regions`` the BraTS region decoding (WT where
    P(bg) < 0.5, TC inside it where P(NCR) + P(ET) > 0.5, ET inside TC where P(ET) > 0.5), as class indices."""
    x0, x1, y0, y1 = box
    inside = probabilities_in_box(p, box)
    inside[inside < _F16_TINY] = 0.0  # float16 subnormals convert ~40x slower and carry no information
    probs_z[z, x0:x1, y0:y1] = inside
    stored = probs_z[z, x0:x1, y0:y1]  # decisions on the stored (float16) probabilities
    if not regions:
        classes_z[z, x0:x1, y0:y1] = np.argmax(stored, axis=-1)
        return
    f = stored.astype(np.float32)
    wt = f[..., 0] < 0.5
    tc = wt & (f[..., 1] + f[..., 3] > 0.5)
    et = tc & (f[..., 3] > 0.5)
    cls = np.where(wt, 2, 0).astype(np.uint8)
    cls[tc] = 1
    cls[et] = 3
    classes_z[z, x0:x1, y0:y1] = cls


def cascade_slices(regions3d: np.ndarray, brain_z: np.ndarray, threshold: float, margin: int) -> np.ndarray:
    """Axial slices the 2-D network runs on: brain slices within ``margin`` slices of one where the 3-D
    whole-tumour probability exceeds ``threshold`` somewhere, or that the 3-D input left out (NaN); every brain
    slice when ``threshold`` <= 0.

    Args:
        regions3d: (Z, S, S, 3) region probabilities (NaN on slices left out); brain_z: (Z,) bool.
    """
    if threshold <= 0:
        return np.flatnonzero(brain_z)
    peak = regions3d[..., 0].reshape(regions3d.shape[0], -1).max(axis=1)
    hot = ~(peak <= threshold)  # NaN (a slice the 3-D input left out) counts as hot: the 2-D network must run
    if margin > 0 and hot.any():
        idx = np.flatnonzero(hot)
        grown = np.zeros_like(hot)
        for z in idx:
            grown[max(z - margin, 0) : z + margin + 1] = True
        hot = grown
    return np.flatnonzero(hot & brain_z)


def _network_batches(loaded: LoadedModel, prep: Prepared, zs: np.ndarray, batch_size: int, tta: bool
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(slice indices, probabilities, entropy or None) per batch of ``zs``, in order.

    The network runs one batch ahead in a helper thread (ONNX Runtime and TensorFlow release the GIL), so the
    caller's work on one batch overlaps the network's on the next. An error in the network is raised here.
    """
    batches = [zs[i : i + batch_size] for i in range(0, len(zs), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="network") as pool:
        pending = pool.submit(run_network, loaded, prep.network_input(batches[0]), tta)
        for b, sel in enumerate(batches):
            p, e = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(run_network, loaded, prep.network_input(batches[b + 1]), tta)
            yield sel, p, e


def assess(loaded: LoadedModel, case: Case, prep: Prepared, labels: np.ndarray, probs: np.ndarray,
           network_agreement: float | None = None) -> QualityFlag:
    """The quality flag of a prediction (``core.engine.quality``) with the model's saved thresholds and reference;
    ``network_agreement``: whole-tumour Dice between the 2-D and the 3-D network (None for a 2-D model)."""
    qmodel: QualityModel = loaded.quality or QualityModel(trained_for_missing=loaded.spec.modality_dropout > 0)
    brain = prep.brain if set(case.images) <= set(loaded.spec.channels) else None  # the brain of every image
    if brain is None:
        brain = np.zeros(case.shape, dtype=bool)
        for vol in case.images.values():
            brain |= np.asarray(vol.data) != 0
    m = measure(labels, probs, brain, case.spacing_mm, intensity_quantiles(prep.slices),
                qmodel.reference_quantiles, loaded.spec.channels, qmodel.thresholds.island_ml,
                **({"network_agreement": network_agreement} if network_agreement is not None else {}))
    return flag(m, qmodel, prep.missing)


def _entropy_to_grid(ent: np.ndarray, box: tuple[int, int, int, int], grid_xy: tuple[int, int]) -> np.ndarray:
    """(S, S) map -> (X, Y) on the native grid, bilinear inside the crop box, 0 outside."""
    import cv2

    x0, x1, y0, y1 = box
    out = np.zeros(grid_xy, dtype=np.float32)
    out[x0:x1, y0:y1] = cv2.resize(np.ascontiguousarray(ent, dtype=np.float32), (y1 - y0, x1 - x0),
                                   interpolation=cv2.INTER_LINEAR)
    return out


def predict_slice(loaded: LoadedModel, prepared: Prepared, z: int, tta: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Segment one axial slice at once, with the 2-D network alone (a preview: a model's 3-D context network, when
    it has one, needs the whole volume and joins in ``predict_case`` only).

    Returns:
        labels (X, Y) uint8 0/1/2/4, probabilities (X, Y, 4) float32, uncertainty (X, Y) float32 or None.
    """
    nx, ny, _ = prepared.grid_shape
    if not prepared.brain_z[z]:
        probs = np.zeros((nx, ny, 4), dtype=np.float32)
        probs[..., 0] = 1.0
        return np.zeros((nx, ny), dtype=np.uint8), probs, (np.zeros((nx, ny), np.float32) if tta else None)
    p, e = run_network(loaded, prepared.network_input(np.array([z])), tta)
    probs = probabilities_to_grid(p[0], prepared.box, (nx, ny))
    unc = _entropy_to_grid(e[0], prepared.box, (nx, ny)) if e is not None else None
    return classes_to_labels(np.argmax(probs, axis=-1)), probs, unc
