"""``python -m core export-seg DICOM_DIR_OR_ZIP --seg SEG.nii.gz --out FILE.dcm``: labels as a DICOM SEG.

The segmentation (a NIfTI label map, BraTS 2021 or 2023 labels, e.g. written by ``segment`` for a case converted
with ``convert``) becomes a DICOM Segmentation object that references the source series of the study: the series
stored on the segmentation's own grid (then the mapping is exact), or the one named with ``--series N`` (then the
labels are resampled onto its slices, nearest neighbour). One segment per label present (NCR/NET, edema,
enhancing tumour); ``--algorithm-type`` says how the labels were made: automatic (the model's, the default),
semiautomatic (the model's corrected by hand) or manual.

The SEG keeps the study's patient and study modules (see ``core.data.dicom_seg.SEG_PHI_NOTE``); nothing printed
here holds an identifier. Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.data import dicom_seg
from core.data.cases import normalise_labels
from core.data.io import atomic_write_bytes, load_volume
from core.errors import DicomError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export-seg",
        help="write a segmentation (NIfTI labels) as a DICOM SEG referencing its source DICOM series",
        description=("Write a NIfTI label map (0/1/2/4, or 3 for ET in BraTS 2023) as a DICOM Segmentation object "
                     "that references the source series of a DICOM study (a folder or a zip archive): one segment "
                     "per label present, frames on the source slices. " + dicom_seg.SEG_PHI_NOTE),
    )
    parser.add_argument("source", type=Path, metavar="DICOM_DIR_OR_ZIP",
                        help="the DICOM study (folder or zip) the case was converted from")
    parser.add_argument("--seg", type=Path, required=True, metavar="SEG.nii.gz", help="the label map (NIfTI)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.dcm", help="the DICOM SEG file to write")
    parser.add_argument("--series", metavar="N", default=None,
                        help=("the series to reference (number as listed by 'convert --list', or its "
                              "SeriesInstanceUID); default: the series on the segmentation's grid"))
    parser.add_argument("--algorithm-type", choices=[t.lower() for t in dicom_seg.ALGORITHM_TYPES],
                        default="automatic",
                        help="automatic: model output; semiautomatic: model output corrected by hand; manual")
    parser.add_argument("--algorithm-name", default="BraTS viewer segmentation model",
                        help="algorithm name recorded in each segment (automatic and semiautomatic)")
    parser.add_argument("--algorithm-version", default="",
                        help="algorithm version recorded (e.g. the model weights' SHA-256); default: package version")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise DicomError("expected an output file name (e.g. seg.dcm), got a folder")
    if out.exists() and not args.overwrite:
        raise DicomError("expected a new output file (use --overwrite to replace it), got an existing one")
    seg_vol, _convention = normalise_labels(load_volume(args.seg))
    series, _same_grid = dicom_seg.read_source_series(args.source, args.series, match=seg_vol)
    blob, info = dicom_seg.seg_bytes(series, seg_vol.data, seg_vol.affine, algorithm_type=args.algorithm_type,
                                     algorithm_name=args.algorithm_name, algorithm_version=args.algorithm_version)
    atomic_write_bytes(out, blob)
    names = ", ".join(dicom_seg.SEGMENTS[lab].segment_label for lab in info.labels)
    number = series.series_number if series.series_number is not None else "-"
    print(f"wrote {out}: DICOM SEG ({args.algorithm_type}), {len(info.labels)} segment(s) ({names}), "
          f"{info.frames} frame(s)")
    print(f"references series {number} {series.description[:40]!r} ({len(series.datasets)} images, "
          f"{'x'.join(map(str, series.shape))}); labels "
          + ("mapped exactly onto its voxels" if info.exact else "resampled onto its slices (nearest neighbour)"))
    for note in info.notes:
        print(f"note: {note}")
    print(dicom_seg.SEG_PHI_NOTE)
    return 0


if __name__ == "__main__":  # pragma: no cover - use ``python -m core export-seg``
    from core.__main__ import main

    sys.exit(main(["export-seg", *sys.argv[1:]]))
