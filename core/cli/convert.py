"""``python -m core convert DICOM_DIR_OR_ZIP --out DIR``: DICOM series to NIfTI, one file per usable series.

Files are named by the guessed sequence (``flair``, ``t1``, ``t1ce``, ``t2``) or ``series-<n>`` (n: the series
number, or ``<number>-<hash>`` derived from the SeriesInstanceUID when two series share a number), and
``DIR/dicom_series.json`` lists every series with its guess, its decision and, for refused series, the reason (it
is written even when no series can be converted). A folder holding several studies or patients is split: each
study goes into ``DIR/study-<k>/`` and the run says which series went where. ``--sequence N=SEQ`` (N: series number or SeriesInstanceUID; SEQ: flair, t1, t1ce, t2, none, skip)
overrides a guess. Patient identifiers are never written (see ``core.data.dicom``).

Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.data import dicom


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "convert",
        help="convert a DICOM folder or zip (one study) to one NIfTI per usable series",
        description=("Convert the series of one DICOM study (a folder or a zip archive) to NIfTI, one file per "
                     "usable series named by its guessed sequence (flair, t1, t1ce, t2) or series-<n>, with a JSON "
                     "listing of series, guesses and refusals. " + dicom.PHI_NOTE),
    )
    parser.add_argument("source", type=Path, metavar="DICOM_DIR_OR_ZIP", help="folder of DICOM files or zip of them")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument("--sequence", action="append", default=[], metavar="N=SEQ",
                        help=("set a series' sequence: N is the series number (as listed) or its SeriesInstanceUID, "
                              f"SEQ one of {', '.join(dicom.OVERRIDE_VALUES)}; repeatable"))
    parser.add_argument("--list", action="store_true", help="only list the series and the decisions; write nothing")
    parser.add_argument("--overwrite", action="store_true", help="write into an output folder that holds files")
    parser.set_defaults(run=run)


def _lines(listing: dict) -> list[str]:
    out = []
    for s in listing["series"]:
        what = s.get("file") or ("refused: " + s["refusal"] if s.get("refusal") else s.get("status", ""))
        if s.get("name") and not s.get("file") and s["status"] == "usable":
            folder = f"study-{s['study']}/" if listing.get("studies", 1) > 1 else ""
            what = f"would write {folder}{s['name']}.nii.gz"
        shape = "x".join(str(v) for v in s.get("shape", [])) or "-"
        out.append(f"series {s['n']!s:>4}  {s['description'][:40]!r:<42} guess={s['sequence_guess'] or '-':<6} "
                   f"{shape:<12} {what}")
    if listing.get("split"):
        out.append(listing["split"][0].upper() + listing["split"][1:] + ".")
    if listing.get("duplicate_files_dropped"):
        out.append(f"{listing['duplicate_files_dropped']} exact duplicate file(s) dropped.")
    return out


def run(args: argparse.Namespace) -> int:
    overrides = dicom.parse_overrides(args.sequence)
    if args.list:
        study = dicom.read_source(args.source, load_pixels=False)
        listing = dicom.study_listing(study, dicom.resolve_names(study, overrides))
        print("\n".join(_lines(listing)))
        print(dicom.PHI_NOTE)
        return 0
    conv = dicom.convert(args.source, args.out, overrides, overwrite=args.overwrite)
    print("\n".join(_lines(conv.listing)))
    print(f"wrote {len(conv.files)} NIfTI file(s) and {conv.listing_path.name} to {args.out}")
    print(dicom.PHI_NOTE)
    return 0


if __name__ == "__main__":  # pragma: no cover - use ``python -m core convert``
    from core.__main__ import main

    sys.exit(main(["convert", *sys.argv[1:]]))
