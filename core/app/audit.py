"""The audit log, re-exported for the app's modules and pages: it lives in ``core/data/audit.py``, below both
the app and the command line."""

from __future__ import annotations

from core.data.audit import (
    ACTIONS,
    AUDIT_FILE_NAME,
    AuditError,
    append_event,
    audit_path,
    make_event,
    read_events,
    utc_now_iso,
)

__all__ = ["ACTIONS", "AUDIT_FILE_NAME", "AuditError", "append_event", "audit_path", "make_event", "read_events", "utc_now_iso"]
