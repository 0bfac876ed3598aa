"""``python -m core segment CASE --out DIR [--model NAME_OR_PATH] [--tta] [--batch-size N]``: segment cases.

``CASE`` is one case folder (BraTS-named NIfTI files, ``.nii`` or ``.nii.gz``) or a folder of case folders
(every case found is segmented). The model defaults to the active model (``models/ACTIVE`` or
``$BRATS_MODEL``, else ``models/unet2d_default``); ``--model`` names a folder under ``models/`` or a path to a
model folder or a ``.keras``/``.h5`` file.

For each case it writes, in the input images' own geometry (same shape, affine and axis order as the files):

- ``DIR/<case_id>_seg.nii.gz``: uint8 labels 0 background, 1 NCR/NET, 2 edema, 4 enhancing tumour;
- ``DIR/<case_id>_prob.nii.gz``: float32 (X, Y, Z, 4) class probabilities (background, NCR, ED, ET);
- with ``--tta``, ``DIR/<case_id>_uncertainty.nii.gz``: float32 normalised predictive entropy in [0, 1].

and prints one JSON line per case: case id, outputs, tumour volumes in mL, times in seconds (load, predict,
write), the model's name and weight SHA-256; and appends a "segment" event (input hashes, model hash,
outputs) to the audit log (``core.app.audit``). Research use only: not for diagnosis.

A bad argument, an unusable model or (for a single case) a bad case exits with status 2 and one ``error:``
line. In folder mode a case that cannot be segmented is reported as ``error: <case_id>: ...`` on stderr, the
others are still segmented, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.config import DISCLAIMER, MODELS_DIR, active_model_dir
from core.data.cases import Case, CaseRef, discover_cases, load_case, load_case_folder
from core.errors import BratsViewerError, DataFolderError, ModelError

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "segment",
        help="segment a case folder (or a folder of cases) and write labels and probabilities as NIfTI",
        description=("Segment every axial slice of a case with a trained U-Net and write <case_id>_seg.nii.gz "
                     "(labels 0/1/2/4), <case_id>_prob.nii.gz (4 class probabilities), <case_id>_quality.json (the "
                     "quality flag: ok or review, with reasons) and, with --tta, <case_id>_uncertainty.nii.gz in "
                     "the input's own geometry. A case needs FLAIR or T1CE plus one other modality; missing ones "
                     "are named in the JSON. Research use only."),
    )
    parser.add_argument("case", type=Path, metavar="CASE", help="a case folder, or a folder of case folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help="a model folder under models/, or a path (default: the active model)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation and an uncertainty map")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per network call (default 16)")
    parser.add_argument("--n4", action="store_true",
                        help="N4 bias-field correction of every image before segmenting (about 4 s per image; for "
                             "raw scanner intensities)")
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


def output_stem(case_id: str) -> str:
    """A file-name-safe form of a case id (BraTS ids pass unchanged)."""
    clean = _SAFE_ID.sub("_", case_id).strip("._")
    return clean or "case"


# ---------------------------------------------------------------------------------------------- segment ---

def segment_case(loaded: Any, case: Case, out_dir: Path, tta: bool = False, batch_size: int = 16,
                 load_s: float = 0.0, n4: bool = False) -> dict[str, Any]:
    """Segment one loaded case (after N4 bias-field correction with ``n4``) and write its outputs in the input's
    geometry.

    Returns:
        The JSON-able summary: case_id, shape, outputs (paths), volumes_ml, time_s, model, tta, disclaimer.
    """
    from core.analysis.metrics import label_volumes_ml
    from core.data.io import atomic_write_bytes, save_like
    from core.engine.inference import predict_case

    t0 = time.perf_counter()
    if n4:
        from core.engine.biasfield import n4_case

        case = n4_case(case)
    n4_s = time.perf_counter() - t0
    pred = predict_case(loaded, case, tta=tta, batch_size=batch_size)
    predict_s = time.perf_counter() - t0 - n4_s
    stem = output_stem(case.case_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    outputs = {
        "seg": str(save_like(case.reference, pred.labels, out_dir / f"{stem}_seg.nii.gz", np.uint8)),
        "prob": str(save_like(case.reference, pred.probabilities, out_dir / f"{stem}_prob.nii.gz", np.float32)),
    }
    if pred.uncertainty is not None:
        outputs["uncertainty"] = str(save_like(case.reference, pred.uncertainty,
                                               out_dir / f"{stem}_uncertainty.nii.gz", np.float32))
    quality = pred.quality.to_dict() if pred.quality is not None else None
    if quality is not None:
        outputs["quality"] = str(atomic_write_bytes(out_dir / f"{stem}_quality.json",
                                                    json.dumps(quality, indent=2).encode()))
    write_s = time.perf_counter() - t1
    volumes = {k: round(v, 3) for k, v in label_volumes_ml(pred.labels, case.spacing_mm).items()}
    return {
        "case_id": case.case_id,
        "shape": list(case.shape),
        "spacing_mm": [float(s) for s in case.spacing_mm],
        "outputs": outputs,
        "volumes_ml": volumes,
        "modalities": list(case.modalities),
        "missing_modalities": list(pred.missing),
        "postprocess": pred.postprocess,
        "quality": quality and {"status": quality["status"], "reasons": quality["reasons"]},
        "time_s": {"load": round(load_s, 3), **({"n4": round(n4_s, 3)} if n4 else {}),
                   "predict": round(predict_s, 3), "write": round(write_s, 3),
                   "total": round(load_s + n4_s + predict_s + write_s, 3)},
        "n4": bool(n4),
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "tta": bool(tta),
        "disclaimer": DISCLAIMER,
    }


def _audit(summary: dict[str, Any], case: Case) -> None:
    """Append a "segment" event to the audit log (``core.app.audit``); a failure is reported, outputs stay written."""
    try:
        from core.app.audit import append_event
    except ImportError:  # the audit module is optional for this command
        return
    try:
        append_event("segment", case_id=summary["case_id"], input_hashes=case.input_hashes(),
                     model_sha256=summary["model"]["sha256"],
                     extra={"source": "cli", "model": summary["model"]["name"], "tta": summary["tta"],
                            "outputs": summary["outputs"], "volumes_ml": summary["volumes_ml"]})
    except (BratsViewerError, OSError) as err:
        print(f"warning: audit log not written ({err})", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from core.engine.model import load_model

    if args.batch_size < 1:
        raise BratsViewerError(f"expected --batch-size >= 1, got {args.batch_size}")
    single, refs = find_cases(args.case)
    if args.out.exists() and not args.out.is_dir():
        raise DataFolderError(f"expected --out to be a folder, got {str(args.out)!r} which is a file")
    t0 = time.perf_counter()
    loaded = load_model(resolve_model_path(args.model))
    model_load_s = time.perf_counter() - t0
    required = ()  # a case may lack some of the model's modalities (core.engine.preprocess.check_modalities)
    if single:
        t1 = time.perf_counter()
        case = load_case_folder(args.case, required=required)
        summary = segment_case(loaded, case, args.out, args.tta, args.batch_size, time.perf_counter() - t1, args.n4)
        summary["time_s"]["model_load"] = round(model_load_s, 3)
        print(json.dumps(summary))
        _audit(summary, case)
        return 0
    failures = 0
    for ref in refs:
        try:
            t1 = time.perf_counter()
            case = load_case(ref, required=required)
            summary = segment_case(loaded, case, args.out, args.tta, args.batch_size, time.perf_counter() - t1,
                                   args.n4)
        except BratsViewerError as err:
            failures += 1
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"error: {ref.case_id}: {message}", file=sys.stderr)
            continue
        summary["time_s"]["model_load"] = round(model_load_s, 3)
        print(json.dumps(summary), flush=True)
        _audit(summary, case)
    return 1 if failures else 0
