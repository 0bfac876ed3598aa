"""Manual corrections: brush strokes drawn on a displayed axial slice applied to a label volume, with an
on-disk edit session (current labels, the model's labels, an undo stack and a history) that survives reloads.

Axis order: label volumes are (X, Y, Z) on the case's RAS grid (index grows toward Right, Anterior, Superior),
labels 0/1/2/4 (uint8). Axial slices are (X, Y) arrays; ``axial_display`` turns one into the image shown on
screen (rows, columns) and ``axial_undisplay`` maps a displayed image back.

Rules of a stroke (``apply_stroke``):
    (a) painting label L (1 NCR/NET, 2 ED, 4 ET) sets the stroked voxels to L;
    (b) erasing (label 0) sets them to background;
    (c) ``inside_tumour_only`` (default: on for NCR and ET, off for ED and erase) restricts the stroke to
        voxels already in the whole tumour (labels 1, 2, 4), so that painted core stays inside the tumour;
        switch it off to grow the tumour with core labels.
``hierarchy_report`` counts what may need a look after editing (isolated core voxels, small fragments).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.config import LABEL_ET, LABEL_NCR, REGIONS, VALID_LABELS, work_dir
from core.data.io import atomic_write_bytes
from core.errors import BratsViewerError

PAINT_LABELS: tuple[int, ...] = (0, 1, 2, 4)  # 0 = erase
_CORE_LABELS: tuple[int, ...] = (LABEL_NCR, LABEL_ET)
# Label files read last (path -> ((path, inode, size, mtime_ns), read-only array)), oldest first; a few entries
# only (9 MB each for a BraTS grid): the current and the model's labels of the cases being corrected.
_READ_CACHE: dict[str, tuple[tuple[str, int, int, int], np.ndarray]] = {}
_READ_CACHE_ENTRIES = 4
_READ_LOCK = threading.Lock()
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class EditError(BratsViewerError):
    """A stroke or an edit session is not usable: wrong shape, bad label, slice out of range, no session."""


# ------------------------------------------------------------------------------------- display transform ---

def axial_display(arr2d: np.ndarray, radiological: bool = True) -> np.ndarray:
    """The image shown on screen for an axial slice.

    Args:
        arr2d: slice of shape (X, Y, ...) on the RAS grid (trailing axes such as RGB are kept).
        radiological: True puts the patient's right on the image's left (radiological convention);
            False puts it on the right (neurological convention).

    Returns:
        A view of shape (Y, X, ...): row 0 is the most anterior row, so anterior is at the top.
    """
    img = np.swapaxes(np.asarray(arr2d), 0, 1)[::-1]  # rows: Y reversed (anterior at top)
    return img[:, ::-1] if radiological else img  # columns: X reversed puts Right (high X) on the left


def axial_undisplay(img: np.ndarray, radiological: bool = True) -> np.ndarray:
    """Inverse of ``axial_display``: a displayed image (Y, X, ...) back to a slice (X, Y, ...)."""
    arr = np.asarray(img)
    arr = arr[:, ::-1] if radiological else arr
    return np.swapaxes(arr[::-1], 0, 1)


def _block_coverage(painted: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """Fraction of each output cell's footprint in ``painted`` (H, W) that is True, shape (out_rows, out_cols).

    Cell r spans source rows [floor(r*H/out_rows), ceil((r+1)*H/out_rows)) (never empty), likewise columns.
    """
    h, w = painted.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = painted.astype(np.int64).cumsum(0).cumsum(1)
    r0 = np.floor(np.arange(out_rows) * h / out_rows).astype(int)
    r1 = np.maximum(np.ceil((np.arange(out_rows) + 1) * h / out_rows).astype(int), r0 + 1)
    c0 = np.floor(np.arange(out_cols) * w / out_cols).astype(int)
    c1 = np.maximum(np.ceil((np.arange(out_cols) + 1) * w / out_cols).astype(int), c0 + 1)
    total = (integral[np.ix_(r1, c1)] - integral[np.ix_(r0, c1)] - integral[np.ix_(r1, c0)]
             + integral[np.ix_(r0, c0)])
    area = np.outer(r1 - r0, c1 - c0)
    return total / area


def mask_from_canvas(image_data: np.ndarray, shape_xy: tuple[int, int], radiological: bool = True,
                     min_coverage: float = 0.5) -> np.ndarray:
    """Boolean stroke mask on the slice grid from a drawing canvas's RGBA image.

    The canvas (streamlit-drawable-canvas ``image_data``, shape (H, W, 4), any size) shows the slice as
    ``axial_display`` draws it, stretched to H x W. A canvas pixel is drawn when its alpha is above 0; a voxel
    is stroked when at least ``min_coverage`` of its footprint on the canvas is drawn (footprints of at least
    one pixel, so a canvas smaller than the slice still maps by nearest neighbour).

    Args:
        image_data: RGBA array (H, W, 4); a 2-D array is read as the alpha channel.
        shape_xy: (X, Y) of the axial slice.
        radiological: the display convention the canvas was drawn in (see ``axial_display``).
        min_coverage: fraction of a voxel's footprint that must be drawn, in (0, 1].

    Returns:
        Boolean mask of shape (X, Y).

    Raises:
        EditError: not an (H, W, 4) or (H, W) array, or a bad slice shape or coverage.
    """
    arr = np.asarray(image_data)
    if arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[..., 3]
    elif arr.ndim == 2:
        alpha = arr
    else:
        raise EditError(f"expected canvas image data of shape (H, W, 4), got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise EditError(f"expected a non-empty canvas, got shape {arr.shape}")
    if len(shape_xy) != 2 or any(int(s) < 1 for s in shape_xy):
        raise EditError(f"expected a slice shape (X, Y) of positive sizes, got {tuple(shape_xy)}")
    if not 0 < min_coverage <= 1:
        raise EditError(f"expected min_coverage in (0, 1], got {min_coverage}")
    nx, ny = int(shape_xy[0]), int(shape_xy[1])
    coverage = _block_coverage(np.asarray(alpha) > 0, ny, nx)  # displayed grid is (Y, X)
    displayed = coverage >= min_coverage - 1e-9
    return np.ascontiguousarray(axial_undisplay(displayed, radiological)).astype(bool)


# ------------------------------------------------------------------------------------------------ strokes ---

def _check_labels_volume(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise EditError(f"expected a label volume of shape (X, Y, Z), got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise EditError(f"expected integer labels, got dtype {arr.dtype}")
    if arr.dtype == np.uint8 and sum(int(np.count_nonzero(arr == v)) for v in VALID_LABELS) == arr.size:
        return arr  # one comparison per valid label: ~7x faster than np.unique on a volume (read on every page run)
    values = set(int(v) for v in np.unique(arr))
    if not values <= VALID_LABELS:
        raise EditError(f"expected labels within {{0, 1, 2, 4}}, got {sorted(values)}")
    return arr


def default_inside_tumour_only(label: int) -> bool:
    """True for NCR (1) and ET (4): painted core stays inside the existing whole tumour by default."""
    return int(label) in _CORE_LABELS


def stroke_target(labels: np.ndarray, z: int, mask: np.ndarray, label: int,
                  inside_tumour_only: bool | None = None) -> np.ndarray:
    """Voxels of slice ``z`` that a stroke changes: boolean (X, Y).

    Args:
        labels: label volume (X, Y, Z), values 0/1/2/4.
        z: axial slice index, 0 <= z < Z.
        mask: stroked voxels of the slice, boolean (X, Y).
        label: 1, 2 or 4 to paint, 0 to erase.
        inside_tumour_only: restrict to voxels already in the whole tumour; None = default for the label.

    Raises:
        EditError: bad shapes, slice index or label.
    """
    arr = _check_labels_volume(labels)
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise EditError(f"expected a boolean stroke mask, got dtype {m.dtype}")
    if m.shape != arr.shape[:2]:
        raise EditError(f"expected a stroke mask of the slice shape {arr.shape[:2]}, got {m.shape}")
    if isinstance(z, bool) or not isinstance(z, int | np.integer) or not 0 <= int(z) < arr.shape[2]:
        raise EditError(f"expected a slice index in [0, {arr.shape[2] - 1}], got {z!r}")
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or int(label) not in PAINT_LABELS:
        raise EditError(f"expected a label among {PAINT_LABELS} (0 erases), got {label!r}")
    label = int(label)
    inside = default_inside_tumour_only(label) if inside_tumour_only is None else bool(inside_tumour_only)
    current = arr[:, :, int(z)]
    target = m & (current != label)
    if inside and label != 0:
        target &= np.isin(current, REGIONS["WT"])
    return target


def apply_stroke(labels: np.ndarray, z: int, mask: np.ndarray, label: int,
                 inside_tumour_only: bool | None = None) -> np.ndarray:
    """A copy of ``labels`` with one stroke applied on axial slice ``z`` (the input is never modified).

    See ``stroke_target`` for the arguments and the module docstring for the rules.

    Returns:
        New uint8 label volume (X, Y, Z).
    """
    target = stroke_target(labels, z, mask, label, inside_tumour_only)
    out = np.array(labels, dtype=np.uint8, copy=True)
    out[:, :, int(z)][target] = np.uint8(label)
    return out


def hierarchy_report(labels: np.ndarray, small_component_voxels: int = 10) -> dict[str, int]:
    """Counts that flag implausible label layouts after editing (26-connectivity in voxel space).

    Returns:
        ``ncr_voxels``, ``ed_voxels``, ``et_voxels``: voxel counts of labels 1, 2, 4;
        ``isolated_core_voxels``: NCR/ET voxels with no other tumour voxel among their 26 neighbours;
        ``core_voxels_without_edema_nearby``: NCR/ET voxels whose 26-neighbourhood holds no edema and that touch
            background (core exposed to healthy tissue; common at the surface, worth a look in the middle);
        ``tumour_components``: connected pieces of the whole tumour;
        ``small_tumour_components``: pieces smaller than ``small_component_voxels`` voxels.
    """
    arr = _check_labels_volume(labels)
    wt = np.isin(arr, REGIONS["WT"])
    core = np.isin(arr, _CORE_LABELS)
    edema = arr == 2
    box = np.ones((3, 3, 3), dtype=bool)
    tumour_neighbours = ndimage.convolve(wt.astype(np.int16), box.astype(np.int16), mode="constant") - wt
    edema_near = ndimage.binary_dilation(edema, structure=box)
    background_near = ndimage.binary_dilation(~wt, structure=box)
    comps, n = ndimage.label(wt, structure=box)
    sizes = np.bincount(comps.ravel())[1:] if n else np.zeros(0, dtype=np.int64)
    return {
        "ncr_voxels": int(np.count_nonzero(arr == 1)),
        "ed_voxels": int(np.count_nonzero(edema)),
        "et_voxels": int(np.count_nonzero(arr == 4)),
        "isolated_core_voxels": int(np.count_nonzero(core & (tumour_neighbours == 0))),
        "core_voxels_without_edema_nearby": int(np.count_nonzero(core & ~edema_near & background_near)),
        "tumour_components": int(n),
        "small_tumour_components": int(np.count_nonzero(sizes < small_component_voxels)),
    }


# ------------------------------------------------------------------------------------------- edit store ---

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types only the first keyword
    return buf.getvalue()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class EditStore:
    """Edit sessions on disk, one folder per case under ``root`` (default ``work_dir()/corrections``).

    Layout of ``<root>/<case_key>/``:
        ``labels.npy``: current corrected labels (X, Y, Z) uint8;
        ``model_labels.npy``: the model's labels the session started from;
        ``meta.json``: {"case_key", "model_sha256", "started_utc"};
        ``history.jsonl``: one JSON object per action (time_utc, action start/paint/erase/undo/reset, z, label,
            voxels_changed, model_sha256);
        ``undo/<n>.npz``: per undoable action, flat indices ``idx`` (int64) and previous values ``old`` (uint8).

    Every file is replaced atomically (temporary file, fsync, rename) and operations on one case hold an
    exclusive lock, so a crash or a second browser tab leaves a loadable state. Arrays are read with
    ``allow_pickle=False``. ``case_key`` must be a plain token (e.g. ``Case.content_key``), never a path.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else work_dir() / "corrections"

    # -- paths and locking --
    def folder(self, case_key: str) -> Path:
        """The session folder of a case.

        Raises:
            EditError: the key is not a plain token of letters, digits, '_' or '-'.
        """
        if not isinstance(case_key, str) or not _KEY_PATTERN.match(case_key):
            raise EditError(f"expected a case key of letters, digits, '_' or '-', got {case_key!r}")
        return self.root / case_key

    @contextmanager
    def _locked(self, case_key: str) -> Iterator[Path]:
        folder = self.folder(case_key)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- reading --
    @staticmethod
    def _read_npy(path: Path) -> np.ndarray | None:
        """The label array of a file, read-only; a file read before and not replaced since (same inode, size and
        modification time: every write replaces the file) comes from memory (a page run reads both label files)."""
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        stamp = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with _READ_LOCK:
            cached = _READ_CACHE.get(stamp[0])
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise EditError(f"expected a saved label array in {path.name}, got an unreadable file ({err})") from err
        arr = _check_labels_volume(arr).astype(np.uint8, copy=False)
        arr.setflags(write=False)
        with _READ_LOCK:
            _READ_CACHE.pop(stamp[0], None)
            _READ_CACHE[stamp[0]] = (stamp, arr)
            while len(_READ_CACHE) > _READ_CACHE_ENTRIES:
                _READ_CACHE.pop(next(iter(_READ_CACHE)))
        return arr

    def load(self, case_key: str) -> np.ndarray | None:
        """The current corrected labels (X, Y, Z) uint8, or None when the case has no session."""
        return self._read_npy(self.folder(case_key) / "labels.npy")

    def model_labels(self, case_key: str) -> np.ndarray | None:
        """The model's labels the session started from, or None."""
        return self._read_npy(self.folder(case_key) / "model_labels.npy")

    def meta(self, case_key: str) -> dict[str, Any] | None:
        """The session's meta data (case_key, model_sha256, started_utc), or None."""
        path = self.folder(case_key) / "meta.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def history(self, case_key: str) -> list[dict[str, Any]]:
        """Actions of the session, oldest first (a partly written last line is skipped)."""
        path = self.folder(case_key) / "history.jsonl"
        if not path.is_file():
            return []
        out: list[dict[str, Any]] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def undo_depth(self, case_key: str) -> int:
        """Number of actions that can be undone."""
        return len(self._undo_files(self.folder(case_key)))

    def is_corrected(self, case_key: str) -> bool:
        """True when the current labels differ from the model's labels."""
        current, model = self.load(case_key), self.model_labels(case_key)
        if current is None or model is None:
            return False
        return current.shape != model.shape or not np.array_equal(current, model)

    # -- writing helpers --
    @staticmethod
    def _undo_files(folder: Path) -> list[Path]:
        undo = folder / "undo"
        if not undo.is_dir():
            return []
        files = [p for p in undo.glob("*.npz") if p.stem.isdigit()]
        return sorted(files, key=lambda p: int(p.stem))

    def _append_history(self, folder: Path, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        path = folder / "history.jsonl"
        with open(path, "ab") as fh:
            if path.stat().st_size > 0:
                with open(path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":
                        line = b"\n" + line  # a crash left a partial line: start afresh
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _require(self, folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
        labels = self._read_npy(folder / "labels.npy")
        if labels is None:
            raise EditError(f"expected an edit session for case {folder.name!r}, got none (start one first)")
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        except (OSError, ValueError):
            meta = {}
        return labels, meta

    def _push_undo(self, folder: Path, idx: np.ndarray, old: np.ndarray) -> None:
        files = self._undo_files(folder)
        n = int(files[-1].stem) + 1 if files else 1
        atomic_write_bytes(folder / "undo" / f"{n:06d}.npz",
                           _npz_bytes(idx=idx.astype(np.int64), old=old.astype(np.uint8)))

    # -- actions --
    def start(self, case_key: str, model_labels: np.ndarray, model_sha: str, restart: bool = False) -> np.ndarray:
        """Open the session of a case for a model's labels and return the current labels.

        An existing session of the same model (same SHA-256 and same labels) is resumed with its edits;
        otherwise (or with ``restart``) a new one starts from ``model_labels`` and the undo stack is cleared.
        The history file is kept and gets a "start" line.

        Raises:
            EditError: bad label volume or key.
        """
        model = _check_labels_volume(model_labels).astype(np.uint8)
        with self._locked(case_key) as folder:
            if not restart:
                meta = self.meta(case_key) or {}
                current = self._read_npy(folder / "labels.npy")
                previous = self._read_npy(folder / "model_labels.npy")
                if (current is not None and previous is not None and meta.get("model_sha256") == model_sha
                        and previous.shape == model.shape and current.shape == model.shape
                        and np.array_equal(previous, model)):
                    return current
            shutil.rmtree(folder / "undo", ignore_errors=True)
            atomic_write_bytes(folder / "model_labels.npy", _npy_bytes(model))
            atomic_write_bytes(folder / "labels.npy", _npy_bytes(model))
            atomic_write_bytes(folder / "meta.json", json.dumps(
                {"case_key": case_key, "model_sha256": model_sha, "started_utc": _now()}, sort_keys=True).encode())
            self._append_history(folder, {"time_utc": _now(), "action": "start", "z": None, "label": None,
                                          "voxels_changed": 0, "model_sha256": model_sha})
            return model.copy()

    def apply(self, case_key: str, z: int, mask: np.ndarray, label: int,
              inside_tumour_only: bool | None = None) -> np.ndarray:
        """Apply one stroke (see ``apply_stroke``), save it and return the new labels.

        A stroke that changes no voxel saves nothing and adds no history line.

        Raises:
            EditError: no session, bad mask, slice index or label.
        """
        with self._locked(case_key) as folder:
            labels, meta = self._require(folder)
            target = stroke_target(labels, z, mask, label, inside_tumour_only)
            n = int(np.count_nonzero(target))
            if n == 0:
                return labels
            full = np.zeros(labels.shape, dtype=bool)
            full[:, :, int(z)] = target
            idx = np.flatnonzero(full)
            old = labels.ravel()[idx]
            # Undo entry first: if the labels write fails, undoing it restores values that are still current.
            self._push_undo(folder, idx, old)
            new = labels.copy()
            new.ravel()[idx] = np.uint8(label)
            atomic_write_bytes(folder / "labels.npy", _npy_bytes(new))
            self._append_history(folder, {"time_utc": _now(), "action": "erase" if int(label) == 0 else "paint",
                                          "z": int(z), "label": int(label), "voxels_changed": n,
                                          "model_sha256": meta.get("model_sha256")})
            return new

    def undo(self, case_key: str) -> np.ndarray:
        """Undo the last stroke or reset and return the labels; with nothing to undo, return them unchanged.

        Raises:
            EditError: no session.
        """
        with self._locked(case_key) as folder:
            labels, meta = self._require(folder)
            files = self._undo_files(folder)
            if not files:
                return labels
            last = files[-1]
            try:
                with np.load(last, allow_pickle=False) as data:
                    idx, old = data["idx"].astype(np.int64), data["old"].astype(np.uint8)
            except (OSError, ValueError, KeyError) as err:
                raise EditError(f"expected a readable undo record {last.name}, got an error ({err})") from err
            if idx.shape != old.shape or (idx.size and (idx.min() < 0 or idx.max() >= labels.size)):
                raise EditError(f"expected undo indices within the volume in {last.name}, got out-of-range ones")
            new = labels.copy()
            new.ravel()[idx] = old
            changed = int(np.count_nonzero(labels.ravel()[idx] != old))
            atomic_write_bytes(folder / "labels.npy", _npy_bytes(new))
            last.unlink()
            self._append_history(folder, {"time_utc": _now(), "action": "undo", "z": None, "label": None,
                                          "voxels_changed": changed, "model_sha256": meta.get("model_sha256")})
            return new

    def reset(self, case_key: str) -> np.ndarray:
        """Return to the model's labels (undoable) and return them.

        Raises:
            EditError: no session.
        """
        with self._locked(case_key) as folder:
            labels, meta = self._require(folder)
            model = self._read_npy(folder / "model_labels.npy")
            if model is None or model.shape != labels.shape:
                raise EditError(f"expected the model's labels of case {case_key!r} beside the edits, got none")
            idx = np.flatnonzero(labels != model)
            if idx.size:
                self._push_undo(folder, idx, labels.ravel()[idx])
                atomic_write_bytes(folder / "labels.npy", _npy_bytes(model))
            self._append_history(folder, {"time_utc": _now(), "action": "reset", "z": None, "label": None,
                                          "voxels_changed": int(idx.size), "model_sha256": meta.get("model_sha256")})
            return model

    def delete(self, case_key: str) -> None:
        """Remove a case's session entirely (labels, undo stack and history)."""
        folder = self.folder(case_key)
        if folder.is_dir():
            shutil.rmtree(folder)


__all__ = [
    "PAINT_LABELS", "EditError", "EditStore", "apply_stroke", "axial_display", "axial_undisplay",
    "default_inside_tumour_only", "hierarchy_report", "mask_from_canvas", "stroke_target"
]
