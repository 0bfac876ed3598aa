"""Tests of the follow-up PDF (core.analysis.report_followup) built from the synthetic comparison of
tests/followup_phantom.py: the disclaimer, both studies, the volume table, the category and its caveat, pictures."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest
from followup_phantom import baseline_case, followup_case

from core.analysis.compare import CAVEAT, Comparison, compare_studies
from core.analysis.report_followup import FOLLOWUP_TITLE, build_followup_pdf, followup_file_name, save_followup_pdf
from core.config import DISCLAIMER


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return compare_studies(baseline_case(), followup_case())


def _text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_pdf_states_disclaimer_volumes_category_and_caveat(comparison: Comparison) -> None:
    pdf = build_followup_pdf(comparison, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert pdf.startswith(b"%PDF")
    text = _flat(_text(pdf))
    assert FOLLOWUP_TITLE in text
    assert _flat(DISCLAIMER) in text
    assert "FU_Baseline" in text and "FU_Followup" in text
    assert "2026-01-02 03:04:05 UTC" in text
    # WT 13.824 -> 4.096 mL (-70.4 %), the sum of products 724 -> 244 mm^2 (-66.3 %)
    assert "13.82 4.10 -9.73 -70.4 %" in text
    assert "724 244 -480 -66.3 %" in text
    assert "PR - partial response" in text
    assert _flat(CAVEAT) in text


def test_pdf_has_four_pictures_and_provenance(comparison: Comparison) -> None:
    reader = pypdf.PdfReader(io.BytesIO(build_followup_pdf(comparison)))
    assert sum(len(page.images) for page in reader.pages) == 4
    text = _flat("\n".join(page.extract_text() for page in reader.pages))
    assert "Follow-up (registered): axial slice" in text
    assert comparison.baseline.images["t1ce"].sha256 in text
    assert "SimpleITK" in text


def test_undefined_percent_is_written_out(comparison: Comparison) -> None:
    from followup_phantom import make_case, phantom

    no_tumour = make_case("FU_Clear", phantom(halves=(0, 0, 0)))
    out = compare_studies(no_tumour, followup_case())
    text = _flat(_text(build_followup_pdf(out)))
    assert "undefined (baseline 0)" in text


def test_save_and_file_name(comparison: Comparison, tmp_path: Path) -> None:
    assert followup_file_name(comparison) == "FU_Baseline_vs_FU_Followup_followup.pdf"
    path = save_followup_pdf(tmp_path / "out.pdf", comparison)
    assert path.read_bytes().startswith(b"%PDF")
