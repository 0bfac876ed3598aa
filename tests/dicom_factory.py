"""Small DICOM series built in code with pydicom, with known geometry and identifiable voxels.

Voxel values encode their own indices: the pixel at (row j, column i) of the k-th slice in position order holds
``voxel_value(i, j, k) = 100 * k + 10 * j + i`` (+1, so that no voxel is 0), so a test can find, for any voxel
of a converted image, which DICOM pixel it came from and hence its expected scanner position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Janeth"
PATIENT_ID = "PID-98765-XYZ"
BIRTH_DATE = "19610417"
ACCESSION = "ACC-55501"
PHI_STRINGS: tuple[str, ...] = ("Doe", "Janeth", PATIENT_ID, BIRTH_DATE, ACCESSION)

AXIAL: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.8.498.2"  # one scanner frame for every series of a test study


def voxel_value(i: int, j: int, k: int) -> int:
    """The stored value of column ``i``, row ``j``, slice ``k`` (slices in position order)."""
    return 100 * k + 10 * j + i + 1


def decode_value(value: int) -> tuple[int, int, int]:
    """(i, j, k) of a value written by ``voxel_value`` (rows and columns < 10)."""
    v = int(value) - 1
    return v % 10, (v // 10) % 10, v // 100


def oblique_iop(deg_about_z: float = 20.0, deg_about_x: float = 15.0) -> tuple[float, ...]:
    """Row and column cosines of an axial plane turned about z, then about x (a double-oblique plane)."""
    a, b = np.radians(deg_about_z), np.radians(deg_about_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rx @ rz
    return (*rot[:, 0], *rot[:, 1])


def series_geometry(iop: Sequence[float], n_slices: int, slice_gap_mm: float, tilt_deg: float = 0.0,
                    origin: Sequence[float] = (-20.0, -30.0, 10.0)) -> list[np.ndarray]:
    """ImagePositionPatient of every slice: along the normal, or tilted toward the column direction.

    A gantry tilt moves each slice along the column cosine by ``gap * tan(tilt)`` on top of the normal step.
    """
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(r, c)
    step = normal * slice_gap_mm + c * slice_gap_mm * np.tan(np.radians(tilt_deg))
    return [np.asarray(origin, dtype=float) + k * step for k in range(n_slices)]


def write_series(folder: str | os.PathLike[str], *, rows: int = 8, columns: int = 8, n_slices: int = 6,
                 iop: Sequence[float] = AXIAL, pixel_spacing: tuple[float, float] = (1.2, 0.9),
                 slice_gap_mm: float = 2.5, tilt_deg: float = 0.0, origin: Sequence[float] = (-20.0, -30.0, 10.0),
                 description: str = "AX T1", protocol: str = "", series_number: int = 3,
                 series_uid: str | None = None, drop: Sequence[int] = (), image_type: str = "ORIGINAL\\PRIMARY",
                 slice_iops: dict[int, Sequence[float]] | None = None, slice_shapes: dict[int, tuple[int, int]] | None = None,
                 rescale: tuple[float, float] | None = None, reverse_files: bool = True,
                 modality: str = "MR", prefix: str = "", rle: bool = False, patient_id: str = PATIENT_ID,
                 patient_name: str = PATIENT_NAME, study_uid: str = "1.2.826.0.1.3680043.8.498.1",
                 mosaic_tiles: int = 0, volume: np.ndarray | None = None) -> tuple[Path, str, list[np.ndarray]]:
    """Write one series as DICOM Part-10 files (one per slice) and return (folder, SeriesInstanceUID, positions).

    Args:
        pixel_spacing: (between rows, between columns) in mm, as DICOM's PixelSpacing.
        drop: slice indices not written (a missing slice).
        slice_iops, slice_shapes: per-slice orientation or (rows, columns) that differ from the rest.
        rescale: (slope, intercept) written on every slice.
        reverse_files: name the files in reverse position order (converters must sort by position).
        prefix: file name prefix (to put several series in one folder).
        rle: store the pixels RLE Lossless compressed (pydicom's own encoder).
        patient_id, patient_name, study_uid: the patient and study the series belongs to.
        mosaic_tiles: write Siemens' private NumberOfImagesInMosaic (0019,100A) with this value (0: none).
        volume: the voxels to store instead of ``voxel_value``, shape (columns, rows, n_slices), int16 range.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    positions = series_geometry(iop, n_slices, slice_gap_mm, tilt_deg, origin)
    for k, pos in enumerate(positions):
        if k in drop:
            continue
        r_k, c_k = (slice_shapes or {}).get(k, (rows, columns))
        meta = FileMetaDataset()
        sop_uid = generate_uid()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = uid
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = BIRTH_DATE
        ds.AccessionNumber = ACCESSION
        ds.InstitutionName = "General Hospital"
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        if protocol:
            ds.ProtocolName = protocol
        ds.ImageType = image_type.split("\\")
        if mosaic_tiles:
            ds.add_new((0x0019, 0x0010), "LO", "SIEMENS MR HEADER")
            ds.add_new((0x0019, 0x100A), "US", mosaic_tiles)
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (slice_iops or {}).get(k, iop)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        if tilt_deg:
            ds.GantryDetectorTilt = f"{tilt_deg:g}"  # what CT scanners record; converters may use it
        ds.SliceThickness = "99"  # deliberately wrong: spacing must come from the positions
        ds.Rows, ds.Columns = r_k, c_k
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        jj, ii = np.meshgrid(np.arange(r_k), np.arange(c_k), indexing="ij")
        pixels = (100 * k + 10 * jj + ii + 1).astype("<i2")  # (rows, columns)
        if volume is not None:
            pixels = np.ascontiguousarray(volume[:, :, k].T).astype("<i2")
        ds.PixelData = pixels.tobytes()
        if rle:
            from pydicom.uid import RLELossless

            ds.compress(RLELossless, encoding_plugin="pydicom")
        index = n_slices - 1 - k if reverse_files else k
        ds.save_as(out / f"{prefix}im{index:04d}.dcm", enforce_file_format=True)
    return out, uid, positions


def expected_world_ras(iop: Sequence[float], pixel_spacing: tuple[float, float], position: np.ndarray,
                       i: int, j: int) -> np.ndarray:
    """RAS (mm) of column ``i``, row ``j`` of a slice whose ImagePositionPatient is ``position`` (LPS)."""
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    lps = np.asarray(position) + i * pixel_spacing[1] * r + j * pixel_spacing[0] * c
    return lps * np.array([-1.0, -1.0, 1.0])
