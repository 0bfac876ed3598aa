"""Append-only audit log: one JSON object per line for every segmentation, correction and export.

Each event holds ``time_utc`` (ISO 8601, UTC), ``action`` (e.g. "segment", "correct", "export_pdf",
"export_csv", "export_nifti"), ``case_id``, ``input_hashes`` (name -> SHA-256 of the input file),
``model_sha256`` and ``extra`` (any JSON-able details). The default file is ``work_dir()/audit.log.jsonl``.

Appends hold an exclusive ``fcntl.flock`` and are flushed and fsynced, so writers in several threads or
processes never interleave lines; a line left partial by a crash is skipped by ``read_events`` and the next
append starts on a new line.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import work_dir
from core.errors import BratsViewerError

AUDIT_FILE_NAME = "audit.log.jsonl"
ACTIONS: tuple[str, ...] = ("segment", "correct", "export_pdf", "export_csv", "export_nifti")


class AuditError(BratsViewerError):
    """An audit event is not recordable (empty action, values that are not JSON-able)."""


def audit_path() -> Path:
    """The default audit log file, ``work_dir()/audit.log.jsonl``."""
    return work_dir() / AUDIT_FILE_NAME


def utc_now_iso() -> str:
    """Current time in UTC as ISO 8601 with a trailing Z, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(action: str, case_id: str = "", input_hashes: Mapping[str, str] | None = None,
               model_sha256: str = "", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The event dict that ``append_event`` writes (time stamped now).

    Raises:
        AuditError: empty action.
    """
    if not isinstance(action, str) or not action.strip():
        raise AuditError(f"expected a non-empty action name, got {action!r}")
    return {
        "time_utc": utc_now_iso(),
        "action": action.strip(),
        "case_id": str(case_id),
        "input_hashes": {str(k): str(v) for k, v in (input_hashes or {}).items()},
        "model_sha256": str(model_sha256 or ""),
        "extra": dict(extra or {}),
    }


def append_event(action: str, case_id: str = "", input_hashes: Mapping[str, str] | None = None,
                 model_sha256: str = "", extra: Mapping[str, Any] | None = None,
                 path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Append one event to the log (created with its folder when missing) and return it.

    Args:
        action: what happened, e.g. "segment", "correct", "export_pdf".
        case_id: display id of the case.
        input_hashes: input name (modality key) -> SHA-256 of the file.
        model_sha256: SHA-256 of the model weights ("" when no model was involved).
        extra: further JSON-able details (paths, counts, flags).
        path: log file; default ``audit_path()``.

    Raises:
        AuditError: empty action or values that are not JSON-able.
    """
    event = make_event(action, case_id, input_hashes, model_sha256, extra)
    try:
        line = json.dumps(event, sort_keys=True, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise AuditError(f"expected JSON-able audit details, got {err}") from err
    target = Path(path) if path is not None else audit_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = (line + "\n").encode("ascii")
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size > 0:
                with open(target, "rb") as rd:
                    rd.seek(size - 1)
                    if rd.read(1) != b"\n":
                        payload = b"\n" + payload  # the previous writer crashed mid-line
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return event


def read_events(path: str | os.PathLike[str] | None = None, action: str | None = None) -> list[dict[str, Any]]:
    """Events of the log, oldest first; a missing file gives [].

    Lines that are not complete JSON objects (a partial last line after a crash) are skipped.

    Args:
        path: log file; default ``audit_path()``.
        action: keep only events of this action.
    """
    target = Path(path) if path is not None else audit_path()
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "action" in item and (action is None or item["action"] == action):
            events.append(item)
    return events
