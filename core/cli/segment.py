"""``python -m core segment CASE --out DIR [--model NAME_OR_PATH] [--tta] [--probabilities] [--workers N | --dask ADDRESS]``.

``CASE`` is one case folder (BraTS-named NIfTI files, ``.nii`` or ``.nii.gz``) or a folder of case folders
(every case found is segmented). The model defaults to the active model (``models/ACTIVE`` or
``$BRATS_MODEL``, else ``models/unet2d_default``); ``--model`` names a folder under ``models/`` or a path to a
model folder or a ``.keras``/``.h5`` file. It runs in ONNX Runtime when the model folder holds a valid
``model.onnx`` (``--runtime`` or ``$BRATS_RUNTIME`` choose), else in TensorFlow.

For each case it writes, in the input images' own geometry (same shape, affine and axis order as the files):

- ``DIR/<case_id>_seg.nii.gz``: uint8 labels 0 background, 1 NCR/NET, 2 edema, 4 enhancing tumour;
- ``DIR/<case_id>_quality.json``: the quality flag (ok or review, with reasons);
- with ``--probabilities``, ``DIR/<case_id>_prob.nii.gz``: (X, Y, Z, 4) class probabilities (background, NCR,
  ED, ET), 8-bit with the NIfTI scale factor 1/255 (readers get values within 0.002);
- with ``--tta``, ``DIR/<case_id>_uncertainty.nii.gz``: normalised predictive entropy in [0, 1], 8-bit likewise.

and prints one JSON line per case: case id, outputs, tumour volumes in mL, times in seconds (load, predict,
write), the model's name, weight SHA-256 and runtime; and appends a "segment" event (input hashes, model hash,
outputs) to the audit log (``core.data.audit``). Research use only: not for diagnosis.

Folder mode (``core.engine.batch``) also writes ``DIR/<case_id>_manifest.json`` and ``DIR/summary.csv`` (case,
status, volumes, quality flag, seconds, error); a rerun skips cases whose inputs, model and options are unchanged
and whose outputs exist; ``--workers N`` segments in N processes, ``--dask ADDRESS`` on a Dask cluster.
Progress goes to stderr.

A bad argument, an unusable model or (for a single case) a bad case exits with status 2 and one ``error:``
line. In folder mode a case that cannot be segmented is reported as ``error: <case_id>: ...`` on stderr, the
others are still segmented, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.cli.common import print_error, print_json
from core.config import MODELS_DIR, active_model_dir
from core.data.audit import append_event
from core.data.cases import CaseRef, discover_cases, load_case_folder
from core.engine.batch import SegmentOptions, load_batch_model, output_stem, run_batch, segment_case
from core.errors import BratsViewerError, DataFolderError, ModelError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "segment",
        help="segment a case folder (or a folder of cases) and write labels and probabilities as NIfTI",
        description=("Segment every axial slice of a case with a trained U-Net and write <case_id>_seg.nii.gz "
                     "(labels 0/1/2/4), <case_id>_quality.json (the quality flag: ok or review, with reasons), "
                     "with --probabilities <case_id>_prob.nii.gz (4 class probabilities) and with --tta "
                     "<case_id>_uncertainty.nii.gz, in the input's own geometry; a folder of cases also gets "
                     "summary.csv and resumes. A case needs FLAIR or T1CE plus one other modality; missing ones "
                     "are named in the JSON. Research use only."),
    )
    parser.add_argument("case", type=Path, metavar="CASE", help="a case folder, or a folder of case folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help="a model folder under models/, or a path (default: the active model)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation and an uncertainty map")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the class probabilities (<case_id>_prob.nii.gz, 8-bit)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per network call (default 16)")
    parser.add_argument("--runtime", choices=("auto", "onnx", "onnx-int8", "tensorflow"), default=None,
                        help="inference runtime (default $BRATS_RUNTIME or auto: the model's ONNX export when valid; "
                             "onnx-int8: its int8 network, faster, with labels that differ, see the model card)")
    parser.add_argument("--workers", type=int, default=1,
                        help="folder mode: worker processes on this machine (default 1)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="folder mode: run the cases on a Dask distributed scheduler, e.g. tcp://host:8786")
    parser.add_argument("--threads", type=int, default=None,
                        help="inference threads per case (default: all cores; with --workers N, cores // N; with "
                             "--dask, $BRATS_RUNTIME_THREADS on the workers or all their cores)")
    parser.add_argument("--n4", action="store_true",
                        help="N4 bias-field correction of every image before segmenting (about 4 s per image; for "
                             "raw scanner intensities)")
    parser.add_argument("--native-study", type=Path, default=None, metavar="DIR",
                        help="a case folder written by 'preprocess' (one case only): also write the labels on each "
                             "original series' grid, <case_id>_seg_native_<seq>.nii.gz (nearest neighbour)")
    parser.set_defaults(run=run)


# ---------------------------------------------------------------------------------------------- model ---

def resolve_model_path(name_or_path: str | None) -> Path:
    """The model folder or file to load: the active model when None, else a path, else a folder of models/.

    Raises:
        ModelError: nothing exists under that name or path.
    """
    if name_or_path is None or not str(name_or_path).strip():
        return active_model_dir()
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.exists():
        return path
    if "/" not in text and "\\" not in text and text not in {".", ".."} and (MODELS_DIR / text).exists():
        return MODELS_DIR / text
    raise ModelError(f"expected a model folder under models/ or a model path, got {text!r} which does not exist")


# ---------------------------------------------------------------------------------------------- cases ---

def find_cases(root: Path) -> tuple[bool, list[CaseRef]]:
    """(single, refs): whether ``root`` is itself one case folder, and the cases to segment.

    Raises:
        DataFolderError: ``root`` is not a folder, holds no case, or two cases share an id.
    """
    if not root.is_dir():
        raise DataFolderError(f"expected a case folder or a folder of cases, got {str(root)!r} which is not a folder")
    refs = discover_cases(root)
    if not refs:
        raise DataFolderError(f"expected BraTS-named NIfTI files in {root.name!r} or its sub-folders, found none")
    here = root.resolve()
    single = all(r.folder.resolve() == here for r in refs) and len(refs) == 1
    seen: dict[str, CaseRef] = {}
    for ref in refs:
        key = output_stem(ref.case_id)
        if key in seen:
            raise DataFolderError(f"expected one case per id, got {ref.case_id!r} in both "
                                  f"{seen[key].folder.name!r} and {ref.folder.name!r}")
        seen[key] = ref
    return single, refs


def _audit(summary: dict[str, Any], input_hashes: dict[str, str]) -> None:
    """Append a "segment" event to the audit log (``core.data.audit``); a failure is reported, outputs stay written."""
    try:
        append_event("segment", case_id=summary["case_id"], input_hashes=input_hashes,
                     model_sha256=summary["model"]["sha256"],
                     extra={"source": "cli", "model": summary["model"]["name"], "tta": summary["tta"],
                            "outputs": summary["outputs"], "volumes_ml": summary["volumes_ml"]})
    except (BratsViewerError, OSError) as err:
        print(f"warning: audit log not written ({err})", file=sys.stderr)


def _write_native(study: Path, summary: dict[str, Any], out: Path) -> dict[str, str]:
    """The labels written back on each original series' grid (``core.data.study``): output key -> path."""
    from core.data.io import load_volume
    from core.data.study import write_native_labels

    seg = load_volume(summary["outputs"]["seg"])
    written = write_native_labels(study, seg, seg.data, out, output_stem(summary["case_id"]))
    return {f"native_{seq}": str(path) for seq, path in written.items()}


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise BratsViewerError(f"expected --batch-size >= 1, got {args.batch_size}")
    if args.workers < 1:
        raise BratsViewerError(f"expected --workers >= 1, got {args.workers}")
    single, refs = find_cases(args.case)
    if args.out.exists() and not args.out.is_dir():
        raise DataFolderError(f"expected --out to be a folder, got {str(args.out)!r} which is a file")
    if args.native_study is not None:
        if not single:
            raise DataFolderError("expected one case folder with --native-study, got a folder of cases")
        from core.data.study import load_record

        load_record(args.native_study)  # refuse a folder that holds no preprocessing record before segmenting
    model_path = resolve_model_path(args.model)
    if args.threads is not None and args.threads < 1:
        raise BratsViewerError(f"expected --threads >= 1, got {args.threads}")
    opts = SegmentOptions(str(model_path), args.runtime, args.tta, args.probabilities, args.n4, args.batch_size,
                          args.threads)
    if single:
        t0 = time.perf_counter()
        loaded = load_batch_model(opts)
        model_load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        # missing modalities: core.engine.preprocess.check_modalities; the reference labels are not needed
        case = load_case_folder(args.case, required=(), labels=False)
        summary = segment_case(loaded, case, args.out, opts, time.perf_counter() - t1)
        summary["time_s"]["model_load"] = round(model_load_s, 3)
        if args.native_study is not None:
            summary["outputs"].update(_write_native(args.native_study, summary, args.out))
        print_json(summary, indent=None)
        _audit(summary, case.input_hashes())
        return 0
    if not args.dask and args.workers == 1:
        load_batch_model(opts)  # an unusable model stops the run before any case (and is the one the run uses)
    failures = 0

    def report(row: dict[str, Any], done: int, total: int) -> None:
        nonlocal failures
        if row["status"] == "error":
            failures += 1
            print_error(f"{row['case_id']}: {row['error']}", flush=True)
        else:
            print_json(row["summary"], indent=None, flush=True)
            if row["status"] == "ok":
                _audit(row["summary"], row["input_sha256"])
        print(f"[{done}/{total}] {row['case_id']}: {row['status']} in {row['seconds']:.1f} s", file=sys.stderr,
              flush=True)

    run_batch(refs, args.out, opts, workers=args.workers, dask_address=args.dask, on_row=report)
    return 1 if failures else 0
