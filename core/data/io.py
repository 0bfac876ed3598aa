"""Load and validate one NIfTI image; the volume type; write arrays back in the input's own geometry.

Every image is checked before it is trusted (signature, gzip integrity and size, dimensionality, voxel type,
finite voxels, voxel size, affine), reoriented once to RAS at load, and carries its original affine so that
anything computed on the RAS grid can be written back exactly in the original voxel order.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.config import MAX_DECOMPRESSED_BYTES, MAX_FILE_BYTES, MAX_VOXELS
from core.data.nibabel_import import nib, ornt_mod
from core.errors import BratsViewerError, ImageContentError, ImageFormatError, ImageSizeError

if TYPE_CHECKING:  # annotations only: nibabel itself comes through core.data.nibabel_import
    import nibabel

_GZIP_MAGIC = b"\x1f\x8b"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_CHUNK = 1 << 20
# Extra bytes tolerated after the voxel data that the header declares (extensions are inside vox_offset).
_TRAILING_SLACK = 64 * 1024

# NIfTI datatype codes accepted: integer and real floating types only.
_ALLOWED_DTYPES: dict[int, str] = {
    2: "uint8", 4: "int16", 8: "int32", 16: "float32", 64: "float64", 256: "int8",
    512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64",
}
_REFUSED_DTYPES: dict[int, str] = {
    1: "binary", 32: "complex64", 128: "RGB24", 1536: "float128", 1792: "complex128", 2048: "complex256",
    2304: "RGBA32",
}
_RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class HeaderInfo:
    """What the raw header declares, read without nibabel's repairs.

    ``dims`` are the image dimensions (``dim[1:dim[0]+1]``), ``pixdim`` the raw voxel sizes of those axes.
    """

    version: int
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: int
    pixdim: tuple[float, ...]
    scl_slope: float
    endian: str

    @property
    def n_voxels(self) -> int:
        # Python integers: NIfTI-2 dims are int64 and their product may overflow a fixed-width integer.
        return math.prod(self.dims) if self.dims else 0

    @property
    def expected_bytes(self) -> int:
        """Bytes of a single-file image: header and extensions plus the voxel data."""
        return self.vox_offset + self.n_voxels * max(self.bitpix, 8) // 8


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3-D image on a RAS+ voxel grid.

    Attributes:
        data: voxel array, shape (X, Y, Z), axes ordered R, A, S (index increases toward Right,
            Anterior, Superior); read-only.
        affine: 4x4 voxel-to-world (mm) affine of ``data``.
        spacing_mm: voxel size along the three axes of ``data`` in mm.
        original_affine: affine of the file as stored.
        original_axcodes: orientation codes of the stored axes, e.g. ("L", "P", "S") for BraTS.
        original_shape: shape as stored.
        sha256: SHA-256 of the file bytes as read (compressed form for .nii.gz).
        source_name: display name (file name); never used as a path.
        stored_dtype: voxel type as stored in the file (e.g. "int16"; ``data`` may differ: floats load as float32).
        warnings: non-fatal findings (e.g. a zero scale factor read as "no scaling", an oblique affine).
    """

    data: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    original_affine: np.ndarray
    original_axcodes: tuple[str, str, str]
    original_shape: tuple[int, int, int]
    sha256: str
    source_name: str = ""
    stored_dtype: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3): |det| of the affine (``voxel_volume_ml_from``),
        exact on a sheared (gantry-tilted) grid, where the product of ``spacing_mm`` is too large."""
        return voxel_volume_ml_from(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def is_oblique(self) -> bool:
        return any("oblique" in w for w in self.warnings)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Map an array on this volume's RAS grid (shape (X, Y, Z, ...)) back to the stored voxel order."""
        if tuple(array.shape[:3]) != self.shape:
            raise ImageContentError(f"array grid must be {self.shape} to write back, not {tuple(array.shape[:3])}")
        orig = ornt_mod.io_orientation(self.original_affine)
        back = ornt_mod.ornt_transform(_RAS_ORNT, orig)
        return np.ascontiguousarray(ornt_mod.apply_orientation(array, back))

    def with_data(self, array: np.ndarray) -> Volume:
        """A volume of the same geometry holding ``array`` (same RAS grid).

        File metadata (``sha256``, ``source_name``, ``stored_dtype``, ``warnings``) still describe the file read.
        """
        if tuple(array.shape[:3]) != self.shape:
            raise ImageContentError(f"array grid must be {self.shape}, not {tuple(array.shape[:3])}")
        arr = np.ascontiguousarray(array)
        arr.setflags(write=False)
        return Volume(arr, self.affine, self.spacing_mm, self.original_affine, self.original_axcodes,
                      self.original_shape, self.sha256, self.source_name, self.stored_dtype, self.warnings)


# ------------------------------------------------------------------------------------------------ reading ---

def voxel_volume_ml_from(geometry: np.ndarray | tuple[float, ...] | list[float]) -> float:
    """The volume of one voxel in mL (1 mL = 1000 mm^3): the one place volumes get their voxel size.

    Args:
        geometry: a 4x4 (or 3x3) voxel-to-world affine in mm: |det| of its 3x3 part, exact on any grid, sheared
            (gantry-tilted) included; or three voxel sizes in mm: their product, exact only on a grid whose axes
            are orthogonal (on a grid tilted by t it is 1/cos(t) too large), for callers without an affine.

    Raises:
        ImageContentError: not an affine or three sizes, or a zero, negative or non-finite volume.
    """
    g = np.asarray(geometry, dtype=float)
    if g.shape in ((4, 4), (3, 3)):
        mm3 = abs(float(np.linalg.det(g[:3, :3])))
    elif g.shape == (3,) and bool((g > 0).all()):
        mm3 = float(np.prod(g))
    else:
        raise ImageContentError(f"expected a 4x4 affine or three positive voxel sizes in mm, got {g.tolist()}")
    if not math.isfinite(mm3) or mm3 <= 0:
        raise ImageContentError(f"expected a positive finite voxel volume, got {mm3} mm^3")
    return mm3 / 1000.0


def _describe_non_nifti(head: bytes) -> str | None:
    """Name a known non-NIfTI format from its first bytes, or None."""
    if head.startswith(_PNG_MAGIC):
        return "a PNG image"
    if head.startswith(_JPEG_MAGIC):
        return "a JPEG image"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file (convert it to NIfTI first, e.g. with dcm2niix)"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return None


def parse_header(raw: bytes) -> HeaderInfo:
    """Read the NIfTI-1 or NIfTI-2 header fields that decide size and validity, without repairs.

    Raises:
        ImageFormatError: the bytes do not start with a single-file NIfTI-1/-2 header.
    """
    if len(raw) == 0:
        raise ImageFormatError("expected a NIfTI image, got an empty file")
    known = _describe_non_nifti(raw[:256])
    if known:
        raise ImageFormatError(f"expected a NIfTI image (.nii or .nii.gz), got {known}")
    if len(raw) < 348:
        raise ImageFormatError(f"expected a NIfTI header of at least 348 bytes, got {len(raw)} bytes")
    for endian in ("<", ">"):
        (sizeof_hdr,) = struct.unpack_from(endian + "i", raw, 0)
        if sizeof_hdr == 348:
            magic = raw[344:348]
            if magic == b"ni1\x00":
                raise ImageFormatError("expected a single-file NIfTI (.nii), got a header of a .hdr/.img pair")
            if magic != b"n+1\x00":
                raise ImageFormatError(f"expected NIfTI-1 magic 'n+1', got {magic!r}")
            dim = struct.unpack_from(endian + "8h", raw, 40)
            datatype, bitpix = struct.unpack_from(endian + "2h", raw, 70)
            pixdim = struct.unpack_from(endian + "8f", raw, 76)
            (vox_offset,) = struct.unpack_from(endian + "f", raw, 108)
            (scl_slope,) = struct.unpack_from(endian + "f", raw, 112)
            version = 1
            break
        if sizeof_hdr == 540:
            if len(raw) < 540:
                raise ImageFormatError(f"expected a NIfTI-2 header of 540 bytes, got {len(raw)} bytes")
            magic = raw[4:8]
            if magic != b"n+2\x00":
                raise ImageFormatError(f"expected NIfTI-2 magic 'n+2', got {magic!r}")
            datatype, bitpix = struct.unpack_from(endian + "2h", raw, 12)
            dim = struct.unpack_from(endian + "8q", raw, 16)
            pixdim = struct.unpack_from(endian + "8d", raw, 104)
            (vox_offset,) = struct.unpack_from(endian + "q", raw, 168)
            (scl_slope,) = struct.unpack_from(endian + "d", raw, 176)
            version = 2
            break
    else:
        try:
            text = raw[:64].decode("ascii")
            what = "a text file" if text.isprintable() or "\n" in text else "unknown binary data"
        except UnicodeDecodeError:
            what = "unknown binary data"
        raise ImageFormatError(f"expected a NIfTI image (.nii or .nii.gz), got {what}")
    ndim = int(dim[0])
    if not 1 <= ndim <= 7:
        raise ImageContentError(f"expected dim[0] between 1 and 7, got {ndim}")
    dims = tuple(int(d) for d in dim[1 : ndim + 1])
    if any(d < 1 for d in dims):
        raise ImageContentError(f"expected positive image dimensions, got {dims}")
    if not np.isfinite(vox_offset) or vox_offset < 0:
        raise ImageFormatError(f"expected a non-negative voxel offset, got {vox_offset}")
    return HeaderInfo(version, dims, int(datatype), int(bitpix), int(vox_offset),
                      tuple(float(p) for p in pixdim[1 : ndim + 1]), float(scl_slope), endian)


def _check_header(info: HeaderInfo) -> None:
    """Refuse dimensionality, size and voxel types we do not handle, before any voxel is decompressed."""
    if info.datatype in _REFUSED_DTYPES:
        raise ImageContentError(
            f"expected integer or real voxels, got {_REFUSED_DTYPES[info.datatype]} (NIfTI datatype {info.datatype})"
        )
    if info.datatype not in _ALLOWED_DTYPES:
        raise ImageContentError(f"expected integer or real voxels, got unknown NIfTI datatype {info.datatype}")
    dims = info.dims
    spatial = dims[:3]
    extra = dims[3:]
    if len(dims) < 3:
        raise ImageContentError(f"expected a 3-D image, got {len(dims)}-D with shape {dims}")
    if any(d != 1 for d in extra):
        raise ImageContentError(f"expected a 3-D image, got {len(dims)}-D with shape {dims}")
    n = math.prod(spatial)  # exact: np.prod of NIfTI-2 int64 dims may wrap around
    if n > MAX_VOXELS:
        raise ImageSizeError(f"expected at most {MAX_VOXELS:,} voxels, got {n:,} (shape {spatial})")
    for axis, p in enumerate(info.pixdim[:3]):
        if not np.isfinite(p) or p <= 0:
            raise ImageContentError(f"expected positive finite voxel sizes, got pixdim[{axis + 1}] = {p}")


def _gunzip_capped(blob: bytes) -> bytes:
    """Decompress a whole gzip stream, checking its CRC, refusing output beyond what the header declares.

    The first kilobytes are decompressed to read the NIfTI header; the cap is then the size it declares plus
    a small slack, so a gzip bomb is refused after at most that many bytes.
    """
    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    parts: list[bytes] = []  # joined once at the end: no growing buffer copied over and over
    size = 0
    cap: int | None = None
    pos = 0
    try:
        while pos < len(blob) or dec.unconsumed_tail:
            if dec.unconsumed_tail:
                chunk = dec.unconsumed_tail
            else:
                chunk = blob[pos : pos + _CHUNK]
                pos += len(chunk)
            limit = _CHUNK if cap is None else max(1, cap + 1 - size)
            piece = dec.decompress(chunk, limit)
            parts.append(piece)
            size += len(piece)
            if cap is None and (size >= 540 or dec.eof):
                info = parse_header(b"".join(parts)[:540])
                _check_header(info)
                cap = min(info.expected_bytes + _TRAILING_SLACK, MAX_DECOMPRESSED_BYTES)
            if cap is not None and size > cap:
                raise ImageSizeError(
                    f"expected at most {cap:,} bytes after decompression (as the header declares), "
                    "got more: refusing a possible gzip bomb"
                )
            if dec.eof:
                break
    except zlib.error as err:
        raise ImageFormatError(f"expected a valid gzip stream, got corrupt data ({err})") from err
    if not dec.eof:
        raise ImageFormatError("expected a complete gzip stream, got a truncated file")
    if dec.unused_data.strip(b"\x00"):
        raise ImageFormatError("expected one gzip stream, got extra data after its end")
    out = b"".join(parts)
    if cap is None:
        parse_header(out)  # raises the right message for short or foreign content
    return out


def _open_nifti(raw: bytes, info: HeaderInfo) -> nibabel.Nifti1Image:
    klass = nib.Nifti1Image if info.version == 1 else nib.Nifti2Image
    try:
        fh = nib.FileHolder(fileobj=io.BytesIO(raw))
        return klass.from_file_map({"header": fh, "image": fh})
    except Exception as err:  # nibabel raises many types for a malformed header
        raise ImageFormatError(f"expected a readable NIfTI header, got an error: {err}") from err


def load_volume_bytes(blob: bytes, name: str = "") -> Volume:
    """Validate and load one NIfTI-1/-2 image (optionally gzip-compressed) from bytes.

    Args:
        blob: the file's bytes as uploaded or read.
        name: a display name (used in messages only, never as a path).

    Returns:
        A ``Volume`` reoriented to RAS.

    Raises:
        ImageFormatError, ImageSizeError, ImageContentError: the bytes are not an acceptable 3-D image;
            the message starts with ``name`` when one is given.
    """
    try:
        return _load_volume_bytes(blob, name)
    except BratsViewerError as err:
        if not name:
            raise
        raise type(err)(f"{name}: {err}") from err


def _load_volume_bytes(blob: bytes, name: str) -> Volume:
    if len(blob) > MAX_FILE_BYTES:
        raise ImageSizeError(f"expected a file of at most {MAX_FILE_BYTES // 2**20} MB, got {len(blob) // 2**20} MB")
    sha = hashlib.sha256(blob).hexdigest()
    raw = _gunzip_capped(blob) if blob[:2] == _GZIP_MAGIC else blob
    info = parse_header(raw[:540])
    _check_header(info)
    if len(raw) < info.expected_bytes:
        raise ImageFormatError(
            f"expected {info.expected_bytes:,} bytes of header and voxels, got {len(raw):,}: the file is truncated"
        )
    img = _open_nifti(raw, info)
    warnings: list[str] = []
    if not np.isfinite(info.scl_slope) or info.scl_slope == 0:
        warnings.append(f"scale factor scl_slope = {info.scl_slope} read as 'no scaling' (NIfTI rule)")
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as err:
        raise ImageFormatError(f"expected readable voxel data, got an error: {err}") from err
    if arr.ndim > 3:
        arr = arr.reshape(arr.shape[:3])
    if arr.dtype.kind == "f":
        if arr.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float32)  # values beyond float32 (e.g. a huge scale factor) become inf
        if not np.isfinite(arr).all():
            n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ImageContentError(
                f"expected finite voxel values, got {n_bad:,} NaN or infinite voxels (after scaling, as float32)"
            )
    elif arr.dtype.kind not in "iu":
        raise ImageContentError(f"expected integer or real voxels, got dtype {arr.dtype}")
    affine = np.asarray(img.affine, dtype=np.float64)
    return _make_volume(arr, affine, sha, name, _ALLOWED_DTYPES[info.datatype], warnings)


def _make_volume(arr: np.ndarray, affine: np.ndarray, sha: str, name: str, stored_dtype: str,
                 warnings: list[str]) -> Volume:
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ImageContentError(f"expected a finite 4x4 affine, got {affine.tolist()}")
    rzs = affine[:3, :3]
    spacing = np.sqrt((rzs**2).sum(axis=0))
    if not np.all(spacing > 0) or abs(np.linalg.det(rzs)) < 1e-9 * float(np.prod(spacing)) or np.linalg.cond(rzs) > 1e6:
        raise ImageContentError(f"expected a non-singular affine, got {np.round(affine, 4).tolist()}")
    cosines = rzs / spacing
    if np.abs(np.abs(cosines).max(axis=0) - 1).max() > 1e-4:
        warnings.append("oblique affine: views show the nearest axis-aligned orientation; outputs keep the exact affine")
    ornt = ornt_mod.io_orientation(affine)
    original_axcodes = tuple(ornt_mod.ornt2axcodes(ornt))
    data = np.ascontiguousarray(ornt_mod.apply_orientation(arr, ornt))
    data.setflags(write=False)
    ras_affine = affine @ ornt_mod.inv_ornt_aff(ornt, arr.shape[:3])
    spacing_ras = tuple(float(s) for s in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(data, ras_affine, spacing_ras, affine, original_axcodes,  # type: ignore[arg-type]
                  tuple(int(s) for s in arr.shape[:3]), sha, name, stored_dtype, tuple(warnings))  # type: ignore[arg-type]


def load_volume(path: str | os.PathLike[str]) -> Volume:
    """Validate and load one NIfTI image from a path (see ``load_volume_bytes``)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as err:
        raise ImageFormatError(f"{p.name}: expected a readable file, got {err.strerror}") from err
    if not p.is_file():
        raise ImageFormatError(f"{p.name}: expected a file, got a folder or special file")
    if size > MAX_FILE_BYTES:
        raise ImageSizeError(f"{p.name}: expected a file of at most {MAX_FILE_BYTES // 2**20} MB, got {size // 2**20} MB")
    try:
        blob = p.read_bytes()
    except OSError as err:
        raise ImageFormatError(f"{p.name}: expected a readable file, got {err.strerror}") from err
    return load_volume_bytes(blob, p.name)


def volume_from_array(data: np.ndarray, affine: np.ndarray, name: str = "") -> Volume:
    """Build a validated Volume from an array in stored order and its affine (synthetic data, tests)."""
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ImageContentError(f"expected a 3-D array, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageContentError("expected finite voxel values, got NaN or infinite voxels")
    sha = hashlib.sha256(arr.tobytes()).hexdigest()
    return _make_volume(arr, np.asarray(affine, dtype=np.float64), sha, name, str(arr.dtype), [])


def read_header_info(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and voxel size (mm) from a file's header only (decompresses at most the first 540 bytes)."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == _GZIP_MAGIC:
            import gzip

            try:
                with gzip.GzipFile(fileobj=fh) as gz:
                    raw = gz.read(540)
            except (OSError, EOFError, zlib.error) as err:
                raise ImageFormatError(f"expected a valid gzip stream, got corrupt data ({err})") from err
        else:
            raw = fh.read(540)
    info = parse_header(raw)
    return info.dims[:3], tuple(abs(p) for p in info.pixdim[:3])


# ------------------------------------------------------------------------------------------------ writing ---

def to_nifti_image(reference: Volume, array_ras: np.ndarray, dtype: np.dtype | type | None = None) -> nibabel.Nifti1Image:
    """A NIfTI image of ``array_ras`` (on ``reference``'s RAS grid, shape (X, Y, Z[, C])) in the reference's
    stored voxel order and original affine."""
    arr = reference.to_original(np.asarray(array_ras))
    if dtype is not None:
        arr = arr.astype(dtype)
    arr = _storable(arr)
    img = nib.Nifti1Image(arr, reference.original_affine, dtype=arr.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(reference.original_affine, code=1)
    img.set_sform(reference.original_affine, code=1)
    return img


def _storable(arr: np.ndarray) -> np.ndarray:
    """``arr`` in a dtype NIfTI writers accept without loss: bool as uint8; 64-bit integers (e.g. from
    ``np.argmax``, which nibabel refuses without an explicit dtype) in the smallest integer type holding them."""
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        for candidate in (np.uint8, np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return arr.astype(candidate)
    return arr


def nifti_bytes(reference: Volume, array_ras: np.ndarray, dtype: np.dtype | type | None = None) -> bytes:
    """Gzip-compressed NIfTI bytes of ``array_ras`` written back in the reference's own geometry."""
    img = to_nifti_image(reference, array_ras, dtype)
    raw = img.to_bytes()
    return _gzip_bytes(raw)


def _gzip_bytes(raw: bytes, level: int = 1) -> bytes:
    """Gzip ``raw``. Level 1: a 143 MB probability map compresses 4x faster than at level 6, ~20% larger."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return comp.compress(raw) + comp.flush()


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, then rename it into place.

    A crash mid-write leaves either the old file or none, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def save_like(reference: Volume, array_ras: np.ndarray, path: str | os.PathLike[str],
              dtype: np.dtype | type | None = None, fraction_8bit: bool = False) -> Path:
    """Write ``array_ras`` (on the reference's RAS grid) as ``.nii.gz`` in the reference's own geometry,
    atomically.

    ``fraction_8bit``: values in [0, 1] (probabilities, normalised entropy) are stored as uint8 with the NIfTI
    scale factor 1/255, which readers apply (``get_fdata``): at most 0.002 from the value, a quarter of the
    float32 size before compression.
    """
    if fraction_8bit:
        arr = np.asarray(array_ras, dtype=np.float32)
        stored = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
        img = to_nifti_image(reference, stored, np.uint8)
        img.header.set_slope_inter(1.0 / 255.0, 0.0)
        return atomic_write_bytes(path, _gzip_bytes(img.to_bytes()))
    return atomic_write_bytes(path, nifti_bytes(reference, array_ras, dtype))
