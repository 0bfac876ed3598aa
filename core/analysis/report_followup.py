"""The follow-up comparison report (PDF): two studies of one patient side by side after rigid registration.

Built from a ``core.analysis.compare.Comparison`` with the helpers of ``core.analysis.report`` (page class, sections,
tables, overlays, library versions). Page 1: the disclaimer, both studies, the registration and its alignment
measures, the volume table (NCR, ED, ET, WT, TC in mL with absolute and percent change), the sums of bidimensional
products and the suggested response category with its caveat. Page 2: axial and coronal pictures of the baseline
and of the registered follow-up through the same point (the baseline's tumour core). Then provenance.

Pure: ``build_followup_pdf`` returns bytes; ``save_followup_pdf`` writes one file atomically.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.analysis.compare import CAVEAT, STRUCTURE_NAMES, Change, Comparison, focus_voxel
from core.analysis.edits import axial_display
from core.analysis.report import (
    _composite,
    _grey,
    _kv,
    _make_pdf_class,
    _png,
    _section,
    _table,
    latin1,
    library_versions,
    open_first_page,
    report_file_name,
)
from core.config import LABEL_COLOURS, LABEL_LONG_NAMES, LABEL_NAMES, MODALITY_TITLES
from core.data.io import atomic_write_bytes

FOLLOWUP_TITLE = "Follow-up comparison report"
IMAGE_PX = 520


def followup_file_name(comparison: Comparison) -> str:
    """A safe download name: ``<baseline>_vs_<follow-up>_followup.pdf``."""
    return report_file_name(f"{comparison.baseline.case_id}_vs_{comparison.followup.case_id}", "followup.pdf")


def _pct(c: Change) -> str:
    return "undefined (baseline 0)" if c.change_pct is None else f"{c.change_pct:+.1f} %"


def _pictures(comparison: Comparison) -> list[tuple[str, bytes, float]]:
    """(caption, PNG, width/height) of axial and coronal slices of both studies through ``focus_voxel``, on the
    baseline grid, radiological convention, background the registration modality."""
    key = comparison.registration.modality
    x, y, z = focus_voxel(comparison)
    sx, sy, sz = comparison.baseline.spacing_mm
    base = _grey(comparison.baseline.images[key].data)
    follow = _grey(comparison.followup_images[key])
    lb, lf = comparison.baseline_labels, comparison.followup_labels_on_baseline
    out = []
    for title, grey, labels in (("Baseline", base, lb), ("Follow-up (registered)", follow, lf)):
        png, aspect = _png(_composite(axial_display(grey[:, :, z]), axial_display(labels[:, :, z])), (sy, sx), IMAGE_PX)
        out.append((f"{title}: axial slice z={z}", png, aspect))
    for title, grey, labels in (("Baseline", base, lb), ("Follow-up (registered)", follow, lf)):
        png, aspect = _png(_composite(grey[:, y, :].T[::-1, ::-1], labels[:, y, :].T[::-1, ::-1]), (sz, sx), IMAGE_PX)
        out.append((f"{title}: coronal slice y={y}", png, aspect))
    return out


def build_followup_pdf(comparison: Comparison, created_utc: datetime | None = None) -> bytes:
    """The follow-up report as PDF bytes (writes nothing)."""
    c = comparison
    created = (created_utc or datetime.now(UTC))
    created = (created.replace(tzinfo=UTC) if created.tzinfo is None else created).astimezone(UTC)
    ids = f"{c.baseline.case_id} -> {c.followup.case_id}"

    class _FollowupPDF(_make_pdf_class()):  # type: ignore[misc]
        def header(self) -> None:
            self.set_font("Helvetica", "B", 8)
            self.set_text_color(90, 90, 90)
            self.cell(0, 4, latin1(FOLLOWUP_TITLE), align="L")
            self.set_font("Helvetica", "", 8)
            self.cell(0, 4, latin1(ids), align="R", new_x="LMARGIN", new_y="NEXT")
            self.set_text_color(0, 0, 0)
            self.ln(2)

    pdf: Any = _FollowupPDF(orientation="P", unit="mm", format="A4")
    open_first_page(pdf, FOLLOWUP_TITLE, f"{FOLLOWUP_TITLE} - {ids}", created)

    _kv(pdf, "Report date (UTC)", created.strftime("%Y-%m-%d %H:%M:%S UTC"))
    for role, case, source in (("Baseline", c.baseline, c.label_sources.get("baseline", "")),
                               ("Follow-up", c.followup, c.label_sources.get("followup", ""))):
        _kv(pdf, role, f"{case.case_id}   (voxel size {' x '.join(f'{s:g}' for s in case.spacing_mm)} mm; "
            f"{', '.join(MODALITY_TITLES[k] for k in case.modalities)})")
        _kv(pdf, "  segmentation", source or "-")

    r = c.registration
    _section(pdf, "Registration of the follow-up to the baseline (rigid)")
    _kv(pdf, "Method", f"SimpleITK Euler 3-D, Mattes mutual information, 3 levels, on {MODALITY_TITLES[r.modality]}")
    _kv(pdf, "Rotation (degrees)", ", ".join(f"{v:+.2f}" for v in r.rotation_deg) + "  (about x, y, z)")
    _kv(pdf, "Translation (mm)", ", ".join(f"{v:+.2f}" for v in r.translation_mm) + "  (x, y, z; RAS)")
    _kv(pdf, "Final metric", f"{r.final_metric:.4f} (Mattes mutual information; lower is better)")
    _kv(pdf, "Alignment", f"correlation inside the brain {r.ncc:.3f}, brain overlap (Dice) {r.brain_dice:.3f}")

    _section(pdf, "Volumes (each study from its own voxel size)")
    rows = [[STRUCTURE_NAMES[v.name], f"{v.baseline:.2f}", f"{v.followup:.2f}", f"{v.change:+.2f}", _pct(v)]
            for v in c.volumes]
    _table(pdf, ["Structure", "Baseline (mL)", "Follow-up (mL)", "Change (mL)", "Change (%)"], rows,
           [76, 26, 27, 24, 33], ["L", "R", "R", "R", "R"])
    p = c.products
    _section(pdf, "Bidimensional products of enhancing tumour (RANO-style)")
    _table(pdf, ["", "Baseline", "Follow-up", "Change", "Change (%)"],
           [["Sum of products (mm^2)", f"{p.baseline:.0f}", f"{p.followup:.0f}", f"{p.change:+.0f}", _pct(p)],
            ["Measurable lesions", str(len(c.rano_baseline.measurable)), str(len(c.rano_followup.measurable)), "", ""]],
           [76, 26, 27, 24, 33], ["L", "R", "R", "R", "R"])
    for role, rano in (("Baseline", c.rano_baseline), ("Follow-up", c.rano_followup)):
        targets = "; ".join(f"lesion {les.index}: {les.d1_mm:.1f} x {les.d2_mm:.1f} mm on axial slice z={les.slice_z}"
                            for les in rano.targets) or "no measurable lesion"
        _kv(pdf, f"{role} targets", targets)
    _kv(pdf, "New measurable lesions", str(c.new_lesions))

    _section(pdf, "Response category the numbers suggest")
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 7, latin1(f"{c.response.category} - {c.response.name}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for reason in c.response.reasons:
        pdf.multi_cell(0, 4.6, latin1(f"- {reason}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_text_color(150, 0, 0)
    pdf.multi_cell(0, 4.8, latin1(CAVEAT + "."), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "I", 7.5)
    pdf.multi_cell(0, 3.8, latin1(
        "Categories (RANO-like, images only): CR no enhancing tumour; PR sum of products down >= 50 %; PD sum of "
        "products up >= 25 % or a new measurable enhancing lesion; SD otherwise. Slice numbers count from 0 on the "
        "baseline's RAS grid."), new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    _section(pdf, "Images on the baseline grid (radiological convention: patient's right on the image's left)")
    pictures = _pictures(c)
    gap = 4.0
    box_w = (pdf.w - pdf.l_margin - pdf.r_margin - gap) / 2
    for row in range(2):
        top = pdf.get_y() + 2
        heights = []
        for col in range(2):
            caption, png, aspect = pictures[2 * row + col]
            w, h = (box_w, box_w / aspect) if aspect >= 1 else (box_w * aspect, box_w)
            h = min(h, 95.0)
            w = h * aspect
            x0 = pdf.l_margin + col * (box_w + gap)
            pdf.image(io.BytesIO(png), x=x0 + (box_w - w) / 2, y=top, w=w, h=h)
            pdf.set_xy(x0, top + h + 0.5)
            pdf.set_font("Helvetica", "", 8)
            pdf.cell(box_w, 4, latin1(caption), align="C")
            heights.append(h)
        pdf.set_xy(pdf.l_margin, top + max(heights) + 6)
    pdf.set_font("Helvetica", "", 8)
    x, y, z = focus_voxel(c)
    pdf.multi_cell(0, 4, latin1(
        f"Background: {MODALITY_TITLES[r.modality]}; through voxel ({x}, {y}, {z}) of the baseline grid (the "
        "centre of the baseline's tumour core); the follow-up resampled onto it (images linear, labels nearest neighbour). "
        "Slices count from 0."), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    xl, yl = pdf.l_margin, pdf.get_y()
    for label in (1, 2, 4):
        pdf.set_fill_color(*LABEL_COLOURS[label])
        pdf.rect(xl, yl + 0.8, 3.5, 3.5, style="F")
        text = latin1(f"{LABEL_NAMES[label]} ({label}): {LABEL_LONG_NAMES[label]}")
        pdf.set_xy(xl + 4.5, yl)
        pdf.cell(pdf.get_string_width(text) + 2, 5, text)
        xl += pdf.get_string_width(text) + 10
    pdf.ln(8)

    _section(pdf, "Provenance")
    for role, case in (("Baseline", c.baseline), ("Follow-up", c.followup)):
        files = [(MODALITY_TITLES[k], case.images[k]) for k in case.modalities]
        if case.seg is not None:
            files.append(("Segmentation", case.seg))
        for title, vol in files:
            _kv(pdf, f"{role} {title}", vol.source_name or "(unnamed)")
            _kv(pdf, "  SHA-256", vol.sha256, mono=True)
    versions = library_versions()
    versions["SimpleITK"] = _simpleitk_version()
    for name, version in versions.items():
        _kv(pdf, name, version)
    return bytes(pdf.output())


def _simpleitk_version() -> str:
    try:
        import SimpleITK as sitk  # noqa: N813

        return str(sitk.Version_VersionString())
    except (ImportError, AttributeError):
        return "not installed"


def save_followup_pdf(path: str | os.PathLike[str], comparison: Comparison) -> Path:
    """Build the follow-up PDF and write it to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, build_followup_pdf(comparison))

