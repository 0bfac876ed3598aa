"""Tests of core/data/audit.py: appended events, concurrent writers, a crash-truncated last line."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

import pytest

from core.data.audit import AuditError, append_event, audit_path, read_events
from core.errors import BratsViewerError


def test_events_are_appended_with_all_fields(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "audit.log.jsonl"
    first = append_event("segment", case_id="C1", input_hashes={"flair": "f" * 64}, model_sha256="m" * 64,
                         extra={"tta": True}, path=log)
    append_event("export_csv", case_id="C1", path=log)
    events = read_events(log)
    assert len(events) == 2 and events[0] == first
    e = events[0]
    assert e["action"] == "segment" and e["case_id"] == "C1" and e["input_hashes"] == {"flair": "f" * 64}
    assert e["model_sha256"] == "m" * 64 and e["extra"] == {"tta": True}
    assert e["time_utc"].endswith("Z")
    assert datetime.fromisoformat(e["time_utc"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert events[1]["action"] == "export_csv" and events[1]["input_hashes"] == {}
    assert [ev["action"] for ev in read_events(log, action="export_csv")] == ["export_csv"]
    assert len(log.read_text().splitlines()) == 2


def test_default_path_is_in_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRATS_VIEWER_WORK_DIR", str(tmp_path))
    assert audit_path() == tmp_path / "audit.log.jsonl"
    assert read_events() == []
    append_event("correct", case_id="X")
    assert [e["case_id"] for e in read_events(tmp_path / "audit.log.jsonl")] == ["X"]


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    log = tmp_path / "audit.log.jsonl"
    n_threads, per_thread = 8, 25
    blob = "x" * 20000  # long lines: unlocked buffered writers would interleave them

    def writer(t: int) -> None:
        for i in range(per_thread):
            append_event("export_pdf", case_id=f"{t}-{i}", extra={"blob": blob}, path=log)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lines = log.read_text().splitlines()
    assert len(lines) == n_threads * per_thread
    parsed = [json.loads(line) for line in lines]  # every line is a whole event
    assert {p["case_id"] for p in parsed} == {f"{t}-{i}" for t in range(n_threads) for i in range(per_thread)}
    assert all(p["extra"]["blob"] == blob for p in parsed)


def test_partial_last_line_is_tolerated(tmp_path: Path) -> None:
    log = tmp_path / "audit.log.jsonl"
    append_event("segment", case_id="A", path=log)
    with open(log, "ab") as fh:
        fh.write(b'{"action": "export_pdf", "case_id": "B", "inp')  # writer died mid-line
    assert [e["case_id"] for e in read_events(log)] == ["A"]
    append_event("export_nifti", case_id="C", path=log)  # starts on a new line
    assert [e["case_id"] for e in read_events(log)] == ["A", "C"]


def test_missing_log_and_bad_events(tmp_path: Path) -> None:
    assert read_events(tmp_path / "none.jsonl") == []
    for bad in ("", "   "):
        with pytest.raises(AuditError, match="action"):
            append_event(bad, path=tmp_path / "a.jsonl")
    with pytest.raises(AuditError, match="JSON"):
        append_event("segment", extra={"obj": object()}, path=tmp_path / "a.jsonl")
    with pytest.raises(AuditError, match="JSON"):
        append_event("segment", extra={"nan": float("nan")}, path=tmp_path / "a.jsonl")
    assert read_events(tmp_path / "a.jsonl") == []
    assert issubclass(AuditError, BratsViewerError)
