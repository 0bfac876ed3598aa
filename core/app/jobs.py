"""Start, watch and stop background training processes (``python -m core train``), and pick the active model.

One run at a time. The running job is recorded in ``work_dir()/jobs/current.json`` (pid, the process's start
time to guard against pid reuse, output folder, command, log file, start time). The process runs in its own
session, so it survives page changes, browser reloads and a restart of the Streamlit server. Its state is read
from the process table (psutil) together with the run's ``progress.json`` (core.engine.training.read_progress), so a
killed or crashed run never shows as running forever.

No Streamlit and no TensorFlow here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from core import config
from core.data.io import atomic_write_bytes
from core.engine.training import read_history, read_progress, write_progress
from core.errors import BratsViewerError

JOB_FILE = "current.json"
LOG_NAME = "train.log"
ACTIVE_FILE = "ACTIVE"
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LIVE_PROGRESS = ("preparing", "running")

# Popen objects of the jobs this process started: polling them reaps the child (no zombie) and gives its exit code.
_PROCS: dict[int, subprocess.Popen] = {}
_EXIT_CODES: dict[int, int] = {}


class JobError(BratsViewerError):
    """A training job cannot be started or stopped, or a model name is not acceptable."""


# ---------------------------------------------------------------------------------------------- paths ---

def jobs_dir() -> Path:
    """``work_dir()/jobs`` (created on demand)."""
    path = config.work_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_file() -> Path:
    return jobs_dir() / JOB_FILE


def read_job() -> dict[str, Any]:
    """The recorded job (empty dict when none or unreadable)."""
    try:
        data = json.loads(job_file().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_job(job: Mapping[str, Any]) -> None:
    atomic_write_bytes(job_file(), json.dumps(dict(job), indent=2).encode())


def validate_model_name(name: str) -> str:
    """A model folder name: letters, digits, ``-`` and ``_`` only (1-64 characters).

    Raises:
        JobError: anything else (path separators, ``..``, spaces, empty).
    """
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise JobError(f"expected a model name of letters, digits, '-' or '_' (1-64 characters), got {name!r}")
    return name


# ------------------------------------------------------------------------------------------ processes ---

def _process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process with this pid and start time (None when gone, a zombie, or the pid was reused)."""
    try:
        proc = psutil.Process(int(pid))
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 0.5:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, ValueError, TypeError, OverflowError):
        return None


def _reap(pid: int) -> int | None:
    """Poll a child this process started: its exit code, or None while running / when not ours."""
    popen = _PROCS.get(int(pid))
    if popen is None:
        return _EXIT_CODES.get(int(pid))
    code = popen.poll()
    if code is not None:
        _PROCS.pop(int(pid), None)
        _EXIT_CODES[int(pid)] = code
    return code


def is_alive(job: Mapping[str, Any]) -> bool:
    """Whether the recorded job's process (same pid and start time) is still running."""
    pid = job.get("pid")
    if not pid:
        return False
    _reap(int(pid))
    return _process(int(pid), job.get("create_time")) is not None


def _progress_pid_alive(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run that another process is training right now (per its progress file)."""
    prog = read_progress(out_dir)
    if prog.get("status") not in LIVE_PROGRESS or not prog.get("pid"):
        return False
    return _process(int(prog["pid"]), None) is not None and time.time() - float(prog.get("updated", 0)) < 3600


# ------------------------------------------------------------------------------------------- commands ---

_FLAG_NAMES: dict[str, str] = {
    "data_dir": "--data", "channels": "--channels", "input_size": "--input-size",
    "normalisation": "--normalisation", "crop": "--crop", "base_filters": "--base-filters", "depth": "--depth",
    "dropout": "--dropout", "epochs": "--epochs", "batch_size": "--batch-size",
    "learning_rate": "--learning-rate", "loss": "--loss", "split": "--split", "val_cases": "--val-cases",
    "test_cases": "--test-cases", "exclude_cases": "--exclude-cases", "seed": "--seed",
    "tumour_repeat": "--tumour-repeat", "early_stopping_patience": "--patience", "max_minutes": "--max-minutes",
    "steps_per_epoch": "--steps-per-epoch", "context": "--context", "modality_dropout": "--modality-dropout",
    "bias_field": "--bias-field", "postprocess": "--postprocess",
}


def train_args(cfg: Mapping[str, Any]) -> list[str]:
    """Command-line arguments of ``python -m core train`` from TrainConfig-like fields (without ``--out``).

    Tuples/lists become comma-separated values; ``augment=False`` gives ``--no-augment``; ``resume=True``
    gives ``--resume``; ``strong_augment=True`` gives ``--strong-augment``; None and empty sequences are left out.

    Raises:
        JobError: an unknown field, or no ``data_dir``.
    """
    unknown = sorted(set(cfg) - set(_FLAG_NAMES) - {"augment", "resume", "strong_augment", "out_dir"})
    if unknown:
        raise JobError(f"expected TrainConfig fields, got unknown {unknown}")
    if not cfg.get("data_dir"):
        raise JobError("expected a data_dir for training, got none")
    args: list[str] = []
    for key, flag in _FLAG_NAMES.items():
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = ",".join(str(v) for v in value)
        args += [flag, str(value)]
    if cfg.get("augment") is False:
        args.append("--no-augment")
    if cfg.get("resume"):
        args.append("--resume")
    if cfg.get("strong_augment"):
        args.append("--strong-augment")
    return args


def start_training(args: Sequence[str] | Mapping[str, Any], out_dir: str | Path, log_dir: str | Path | None = None,
                   env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Launch ``sys.executable -m core train ARGS --out OUT_DIR`` as a background process in a new session.

    Args:
        args: CLI arguments (without ``--out``) or TrainConfig-like fields (see ``train_args``).
        out_dir: the model folder the run writes (created).
        log_dir: folder of the run's log ``train.log`` (stdout and stderr); default ``out_dir``.
        env: extra environment variables for the child (e.g. thread limits).

    Returns:
        The job record (as written to the job file): pid, create_time, out_dir, log, command, started.

    Raises:
        JobError: a recorded job is still running, ``out_dir`` is being trained by another process, or the
            arguments already name ``--out``.
    """
    argv = train_args(args) if isinstance(args, Mapping) else [str(a) for a in args]
    if any(a == "--out" or a.startswith("--out=") for a in argv):
        raise JobError("expected the output folder as out_dir, got --out among the arguments")
    current = read_job()
    if current and is_alive(current):
        raise JobError(f"expected no training running, got pid {current.get('pid')} writing {current.get('out_dir')}")
    out = Path(out_dir).expanduser().resolve()
    if _progress_pid_alive(out):
        raise JobError(f"expected {out} not to be in training, got a live run writing it")
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(log_dir).expanduser().resolve() if log_dir else out
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / LOG_NAME
    command = [sys.executable, "-m", "core", "train", *argv, "--out", str(out)]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **dict(env or {})}
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        popen = subprocess.Popen(command, cwd=str(config.PROJECT_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
    _PROCS[popen.pid] = popen
    _EXIT_CODES.pop(popen.pid, None)
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = None
    job = {"pid": popen.pid, "create_time": create_time, "out_dir": str(out), "log": str(log_path),
           "command": command, "started": time.time(), "stop_requested": False, "returncode": None}
    _write_job(job)
    return job


# --------------------------------------------------------------------------------------------- status ---

def log_tail(path: str | Path | None, lines: int = 30, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file ('' when absent)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def job_status() -> dict[str, Any]:
    """The state of the recorded job.

    Returns:
        ``{"state": "idle"}`` when no job was ever recorded; otherwise the job record plus
        ``state`` ("starting", "preparing", "running", "finished", "failed", "stopped" or
        "stopped (process ended)"), ``alive`` (bool), ``progress`` (the progress.json dict), ``returncode``
        (int or None when unknown) and ``log_tail`` (last lines of the log).
    """
    job = read_job()
    if not job:
        return {"state": "idle", "alive": False, "progress": {}}
    pid = int(job.get("pid") or 0)
    alive = is_alive(job)
    # the exit code after the liveness check: a process that ends between the two is then both not alive and reaped
    code = _reap(pid) if pid else None
    if code is not None and job.get("returncode") is None:
        job["returncode"] = code
        _write_job(job)
    progress = read_progress(job.get("out_dir", "")) if job.get("out_dir") else {}
    if float(progress.get("updated", 0) or 0) < float(job.get("started", 0) or 0) - 1.0:
        progress = {}  # left over from an earlier run in the same folder
    status = str(progress.get("status", ""))
    if alive:
        state = status if status in LIVE_PROGRESS else "starting"
    elif status in ("finished", "failed", "stopped"):
        state = status
    elif job.get("stop_requested"):
        state = "stopped"
    elif status in LIVE_PROGRESS:
        state = "failed" if job.get("returncode") not in (None, 0) else "stopped (process ended)"
    else:
        state = "failed" if job.get("returncode") not in (None, 0) or not status else "stopped (process ended)"
    return {**job, "state": state, "alive": alive, "progress": progress,
            "log_tail": log_tail(job.get("log"), 30)}


def history(out_dir: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``history.csv`` (one per finished epoch)."""
    return read_history(out_dir)


def other_live_runs(models_dir: str | Path | None = None) -> list[str]:
    """Names of folders under ``models_dir`` being trained right now by a process other than the recorded job
    (e.g. a ``python -m core train`` started from a terminal), per their progress files."""
    base = _models_dir(models_dir)
    job = read_job()
    mine = Path(job["out_dir"]).resolve() if job.get("out_dir") and is_alive(job) else None
    if not base.is_dir():
        return []
    return [d.name for d in sorted(base.iterdir())
            if d.is_dir() and d.resolve() != mine and _progress_pid_alive(d)]


# ----------------------------------------------------------------------------------------------- stop ---

def _signal_group(proc: psutil.Process, sig: int) -> None:
    try:
        os.killpg(os.getpgid(proc.pid), sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def _wait_gone(job: Mapping[str, Any], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(job):
            return True
        time.sleep(0.2)
    return not is_alive(job)


def stop_training(grace_s: float = 8.0, term_s: float = 4.0) -> dict[str, Any]:
    """Stop the recorded job: SIGINT to its process group (training ends cleanly and marks the run stopped),
    then SIGTERM after ``grace_s`` seconds, then SIGKILL after ``term_s`` more. The last checkpoint and the CSV
    log written at the end of each epoch stay readable.

    Returns:
        ``job_status()`` afterwards.

    Raises:
        JobError: no job is running.
    """
    job = read_job()
    if not job or not is_alive(job):
        raise JobError("expected a running training job to stop, got none")
    proc = _process(int(job["pid"]), job.get("create_time"))
    job["stop_requested"] = True
    _write_job(job)
    if proc is not None:
        _signal_group(proc, signal.SIGINT)
        if not _wait_gone(job, grace_s):
            _signal_group(proc, signal.SIGTERM)
            if not _wait_gone(job, term_s):
                _signal_group(proc, signal.SIGKILL)
                _wait_gone(job, 5.0)
    popen = _PROCS.get(int(job["pid"]))
    if popen is not None:  # our own child: collect its exit code (it may still be a zombie a moment longer)
        try:
            popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        _reap(int(job["pid"]))
    out = job.get("out_dir")
    if out and read_progress(out).get("status") in LIVE_PROGRESS:
        write_progress(Path(out), status="stopped", error="stopped by the user")
    return job_status()


# --------------------------------------------------------------------------------------------- models ---

def _models_dir(models_dir: str | Path | None) -> Path:
    return Path(models_dir) if models_dir is not None else config.MODELS_DIR


def active_model_name(models_dir: str | Path | None = None) -> str:
    """The name in ``models_dir/ACTIVE`` ('' when absent)."""
    try:
        return (_models_dir(models_dir) / ACTIVE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def list_models(models_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Trained model folders (weights present) under ``models_dir`` (default ``config.MODELS_DIR``).

    Returns:
        Dicts with name, path, card (model_card.json dict, may be empty), card_markdown (MODEL_CARD.md text or
        '') and active (bool: named by ``ACTIVE``, or the default name when there is no ``ACTIVE``).
    """
    from core.engine.model import list_models as _list

    base = _models_dir(models_dir)
    active = active_model_name(base) or config.DEFAULT_MODEL_NAME
    rows = []
    for row in _list(base):
        try:
            md = (Path(row["path"]) / "MODEL_CARD.md").read_text(encoding="utf-8")
        except OSError:
            md = ""
        rows.append({**row, "card_markdown": md, "active": row["name"] == active})
    return rows


def set_active_model(name: str, models_dir: str | Path | None = None) -> Path:
    """Write ``models_dir/ACTIVE`` (atomically) naming an existing model folder; read by
    ``config.active_model_dir()``.

    Returns:
        The model folder.

    Raises:
        JobError: a name with anything but letters, digits, '-' and '_', or no such model folder.
    """
    validate_model_name(name)
    base = _models_dir(models_dir)
    folder = base / name
    if not folder.is_dir():
        raise JobError(f"expected an existing model folder under {base}, got {name!r}")
    atomic_write_bytes(base / ACTIVE_FILE, (name + "\n").encode())
    return folder


# ---- the training form's defaults: the shipped model's recipe ---------------------------------------------------
# What a recipe may set in the form, with the type each value must have (anything else is ignored).
RECIPE_FIELDS: dict[str, type] = {
    "channels": tuple, "context": int, "input_size": int, "normalisation": str, "crop": str, "base_filters": int,
    "depth": int, "loss": str, "epochs": int, "batch_size": int, "max_minutes": float, "modality_dropout": float,
    "bias_field": float, "strong_augment": bool,
}


def recipe_defaults(model_dir: str | Path | None = None) -> dict[str, Any]:
    """The training settings of a model folder (default: the shipped ``models/unet2d_default`` of the project),
    for the Training form's defaults: its ``config.json`` (the TrainConfig it was trained with), else the
    ``preprocess`` block of its ``model_card.json``.

    Only the ``RECIPE_FIELDS`` with a value of the right type are kept (channels: known modality keys, in the
    recipe's order); an absent or unreadable folder gives ``{}``. No TensorFlow.
    """
    folder = Path(model_dir) if model_dir is not None else config.PROJECT_ROOT / "models" / config.DEFAULT_MODEL_NAME
    raw: dict[str, Any] = {}
    for name, pick in (("config.json", lambda d: d), ("model_card.json", lambda d: d.get("preprocess"))):
        try:
            data = pick(json.loads((folder / name).read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(data, dict) and data:
            raw = data
            break
    out: dict[str, Any] = {}
    for key, kind in RECIPE_FIELDS.items():
        value = raw.get(key)
        if kind is tuple:
            if isinstance(value, list) and value and all(v in config.MODALITIES for v in value):
                out[key] = tuple(dict.fromkeys(str(v) for v in value))
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            out[key] = value
    return out
