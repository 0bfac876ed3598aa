"""Segmenting many cases: one case's outputs, resumable manifests, worker processes and a Dask cluster.

One case (``segment_case``) writes, in the input images' own geometry: ``<stem>_seg.nii.gz`` (uint8 labels
0/1/2/4) always; ``<stem>_prob.nii.gz`` ((X, Y, Z, 4) class probabilities, 8-bit with scale 1/255) only when
asked; ``<stem>_uncertainty.nii.gz`` (normalised entropy, 8-bit) with TTA; ``<stem>_quality.json`` (the flag);
and ``<stem>_manifest.json`` (input file hashes, model hash, options, outputs, summary), which lets a rerun skip
a case whose inputs, model and options are unchanged and whose outputs all exist.

``run_batch`` segments a list of cases in this process, in N worker processes (each loads the model once and
uses cores // N threads), or on a Dask distributed cluster (``dask_address``). A case that fails is reported
in its row and the others go on. Rows feed ``summary.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import DISCLAIMER
from core.data.cases import Case, CaseRef, load_case
from core.errors import BratsViewerError

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
MANIFEST_SUFFIX = "_manifest.json"
SUMMARY_NAME = "summary.csv"
SUMMARY_FIELDS = ("case_id", "status", "NCR_ml", "ED_ml", "ET_ml", "WT_ml", "TC_ml", "quality", "quality_reasons",
                  "seconds", "error")
RowFn = Callable[[dict[str, Any], int, int], None]


@dataclass(frozen=True)
class SegmentOptions:
    """What to run and what to write for every case of a batch.

    Attributes:
        model_path: model folder or file (``core.engine.model.load_model``).
        runtime: "auto", "onnx" or "tensorflow" (None: ``$BRATS_RUNTIME`` or auto).
        tta: flip test-time augmentation and an uncertainty map.
        probabilities: also write the class probabilities.
        n4: N4 bias-field correction before segmenting.
        batch_size: slices per network call.
        threads: intra-op threads of the ONNX Runtime session (None: all cores).
    """

    model_path: str
    runtime: str | None = None
    tta: bool = False
    probabilities: bool = False
    n4: bool = False
    batch_size: int = 16
    threads: int | None = None

    def output_options(self) -> dict[str, Any]:
        """The options that change a case's outputs (what a resumed run must match)."""
        return {"tta": self.tta, "probabilities": self.probabilities, "n4": self.n4}


def output_stem(case_id: str) -> str:
    """A file-name-safe form of a case id (BraTS ids pass unchanged)."""
    clean = _SAFE_ID.sub("_", case_id).strip("._")
    return clean or "case"


def file_hashes(ref: CaseRef) -> dict[str, str]:
    """Modality key -> SHA-256 of the case's input image file (the segmentation file is not an input)."""
    out = {}
    for key in ref.modalities:
        h = hashlib.sha256()
        with open(ref.files[key], "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[key] = h.hexdigest()
    return out


# -------------------------------------------------------------------------------------------- one case ---

def segment_case(loaded: Any, case: Case, out_dir: Path, opts: SegmentOptions, load_s: float = 0.0) -> dict[str, Any]:
    """Segment one loaded case (after N4 with ``opts.n4``) and write its outputs in the input's geometry.

    Returns:
        The JSON-able summary: case_id, shape, spacing_mm, outputs (paths), volumes_ml, quality, time_s, model
        (name, sha256, runtime), options, disclaimer.
    """
    from core.analysis.metrics import label_volumes_ml
    from core.data.io import atomic_write_bytes, save_like
    from core.engine.inference import predict_case

    t0 = time.perf_counter()
    if opts.n4:
        from core.engine.biasfield import n4_case

        case = n4_case(case)
    n4_s = time.perf_counter() - t0
    pred = predict_case(loaded, case, tta=opts.tta, batch_size=opts.batch_size)
    predict_s = time.perf_counter() - t0 - n4_s
    stem = output_stem(case.case_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    outputs = {"seg": str(save_like(case.reference, pred.labels, out_dir / f"{stem}_seg.nii.gz", np.uint8))}
    if opts.probabilities:
        outputs["prob"] = str(save_like(case.reference, pred.probabilities, out_dir / f"{stem}_prob.nii.gz",
                                        fraction_8bit=True))
    if pred.uncertainty is not None:
        outputs["uncertainty"] = str(save_like(case.reference, pred.uncertainty,
                                               out_dir / f"{stem}_uncertainty.nii.gz", fraction_8bit=True))
    quality = pred.quality.to_dict() if pred.quality is not None else None
    if quality is not None:
        outputs["quality"] = str(atomic_write_bytes(out_dir / f"{stem}_quality.json",
                                                    json.dumps(quality, indent=2).encode()))
    write_s = time.perf_counter() - t1
    volumes = {k: round(v, 3) for k, v in label_volumes_ml(pred.labels, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml).items()}
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
        "time_s": {"load": round(load_s, 3), **({"n4": round(n4_s, 3)} if opts.n4 else {}),
                   "predict": round(predict_s, 3), "write": round(write_s, 3),
                   "total": round(load_s + n4_s + predict_s + write_s, 3)},
        "n4": bool(opts.n4),
        "model": {"name": loaded.name, "sha256": loaded.sha256, "runtime": getattr(loaded, "runtime", "tensorflow")},
        "tta": bool(opts.tta),
        "probabilities": bool(opts.probabilities),
        "disclaimer": DISCLAIMER,
    }


def read_manifest(out_dir: Path, case_id: str) -> dict[str, Any] | None:
    path = out_dir / f"{output_stem(case_id)}{MANIFEST_SUFFIX}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_done(manifest: dict[str, Any] | None, hashes: dict[str, str], model_sha256: str, opts: SegmentOptions) -> bool:
    """Whether a manifest shows this case already segmented from these very inputs, model and options, with
    every output still on disk."""
    if not manifest:
        return False
    outputs = manifest.get("summary", {}).get("outputs", {})
    return (manifest.get("input_sha256") == hashes and manifest.get("model_sha256") == model_sha256
            and manifest.get("options") == opts.output_options() and bool(outputs)
            and all(Path(p).is_file() for p in outputs.values()))


# ---------------------------------------------------------------------------------------- worker side ---

_LOADED: dict[tuple[str, str | None, int | None], Any] = {}


def load_batch_model(opts: SegmentOptions) -> Any:
    """The model, loaded once per process (and per path/runtime/threads).

    Raises:
        ModelError: the model cannot be loaded.
    """
    key = (opts.model_path, opts.runtime, opts.threads)
    if key not in _LOADED:
        from core.engine.model import load_model

        if opts.threads:
            os.environ["BRATS_RUNTIME_THREADS"] = str(opts.threads)
        _LOADED[key] = load_model(opts.model_path, runtime=opts.runtime)
    return _LOADED[key]


def segment_ref(ref: CaseRef, out_dir: str, opts: SegmentOptions) -> dict[str, Any]:
    """Segment one case found on disk, or skip it when its manifest shows it done; never raises.

    Returns:
        A row: case_id, status ("ok", "skipped" or "error"), summary (or None), error (one line or ""),
        seconds, input_sha256.
    """
    from core.data.io import atomic_write_bytes
    from core.engine.allocator import limit_arenas

    limit_arenas()  # once per process: two malloc arenas keep a worker's memory from creeping over its cases
    started = time.perf_counter()
    out = Path(out_dir)
    row: dict[str, Any] = {"case_id": ref.case_id, "status": "error", "summary": None, "error": "",
                           "seconds": 0.0, "input_sha256": {}}
    try:
        loaded = load_batch_model(opts)
        hashes = file_hashes(ref)
        row["input_sha256"] = hashes
        manifest = read_manifest(out, ref.case_id)
        if manifest is not None and is_done(manifest, hashes, loaded.sha256, opts):
            row.update(status="skipped", summary=manifest["summary"])
        else:
            t0 = time.perf_counter()
            case = load_case(ref, required=(), labels=False)
            summary = segment_case(loaded, case, out, opts, time.perf_counter() - t0)
            record = {"input_sha256": hashes, "model_sha256": loaded.sha256, "options": opts.output_options(),
                      "summary": summary}
            atomic_write_bytes(out / f"{output_stem(ref.case_id)}{MANIFEST_SUFFIX}",
                               json.dumps(record, indent=2).encode())
            row.update(status="ok", summary=summary)
    except BratsViewerError as err:
        row["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    except Exception as err:  # a batch goes on past any one case's failure; the row carries the reason
        first = str(err).splitlines()[0] if str(err) else ""
        row["error"] = f"{type(err).__name__}: {first}"[:300]
        row["traceback"] = traceback.format_exc(limit=3)
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _init_worker(threads: int | None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads:
        os.environ["BRATS_RUNTIME_THREADS"] = str(threads)


# ---------------------------------------------------------------------------------------- driver side ---

def run_batch(refs: Iterable[CaseRef], out_dir: Path, opts: SegmentOptions, workers: int = 1,
              dask_address: str | None = None, on_row: RowFn | None = None) -> list[dict[str, Any]]:
    """Segment every case; rows come back in completion order and ``summary.csv`` is rewritten after each.

    Args:
        refs: the cases.
        out_dir: output folder (created).
        opts: what to run and write.
        workers: worker processes on this machine (1: in this process).
        dask_address: a Dask distributed scheduler ("tcp://host:8786"); its workers must see the same project
            version, model path, case paths and output folder (a shared filesystem).
        on_row: called with (row, done, total) after each case (progress).

    Raises:
        BratsViewerError: workers < 1, or the Dask cluster cannot be reached.
    """
    refs = list(refs)
    if workers < 1:
        raise BratsViewerError(f"expected --workers >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        write_summary(out_dir / SUMMARY_NAME, rows)
        if on_row is not None:
            on_row(row, len(rows), len(refs))

    if dask_address:
        _run_dask(refs, out_dir, opts, dask_address, done)
    elif workers == 1:
        for ref in refs:
            done(segment_ref(ref, str(out_dir), opts))
    else:
        _run_processes(refs, out_dir, opts, workers, done)
    return rows


def _run_processes(refs: list[CaseRef], out_dir: Path, opts: SegmentOptions, workers: int,
                   done: Callable[[dict[str, Any]], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = opts.threads or max(1, (os.cpu_count() or 1) // workers)
    wopts = SegmentOptions(**{**asdict(opts), "threads": threads})
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold TensorFlow threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(segment_ref, ref, str(out_dir), wopts): ref for ref in refs}
        for fut in as_completed(futures):
            ref = futures[fut]
            try:
                done(fut.result())
            except BrokenProcessPool as err:  # a worker died (e.g. killed for memory): this case failed
                done({"case_id": ref.case_id, "status": "error", "summary": None, "seconds": 0.0,
                      "error": f"worker process died ({err})"[:300], "input_sha256": {}})


def _run_dask(refs: list[CaseRef], out_dir: Path, opts: SegmentOptions, address: str,
              done: Callable[[dict[str, Any]], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError as err:
        raise BratsViewerError("expected the dask distributed package for --dask, it is not installed") from err
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise BratsViewerError(f"expected a Dask scheduler at {address!r}, could not connect ({err})") from err
    try:
        futures = {client.submit(segment_ref, ref, str(out_dir), opts, key=f"segment-{i}-{ref.case_id}",
                                 pure=False): ref for i, ref in enumerate(refs)}
        for fut in as_completed(list(futures)):
            ref = futures[fut]
            try:
                done(fut.result())
            except Exception as err:  # the worker running it died or the task was lost
                done({"case_id": ref.case_id, "status": "error", "summary": None, "seconds": 0.0,
                      "error": f"Dask task failed ({type(err).__name__}: {err})"[:300], "input_sha256": {}})
    finally:
        client.close()


def summary_row(row: dict[str, Any]) -> dict[str, Any]:
    """One ``summary.csv`` line: case, status, volumes in mL, quality flag and reasons, seconds, error."""
    summary = row.get("summary") or {}
    vols = summary.get("volumes_ml", {})
    quality = summary.get("quality") or {}
    return {"case_id": row["case_id"], "status": row["status"],
            **{f"{k}_ml": vols.get(k, "") for k in ("NCR", "ED", "ET", "WT", "TC")},
            "quality": quality.get("status", ""), "quality_reasons": "; ".join(quality.get("reasons", [])),
            "seconds": row.get("seconds", ""), "error": row.get("error", "")}


def write_summary(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``summary.csv`` (one line per case, sorted by case id) atomically."""
    from core.data.io import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["case_id"]):
        writer.writerow(summary_row(row))
    return atomic_write_bytes(path, buf.getvalue().encode())
