"""The report page's RANO-style measurement, computed once per (case, labels content) and shared read-only.

``core.analysis.measure.measure_rano`` takes about half a second on a 240 x 240 x 155 volume; the page reruns on
every widget change, so the result is kept in ``st.cache_resource`` (frozen dataclasses: nothing to copy).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.analysis.measure import RanoResult, measure_rano
from core.app.segstate import labels_digest
from core.data.cases import Case


@st.cache_resource(max_entries=6, show_spinner="Measuring the enhancing lesions...")
def _rano_cached(case_key: str, labels_key: str, _labels: Any, spacing_mm: tuple[float, float, float],
                voxel_volume_ml: float) -> RanoResult:
    return measure_rano(_labels, spacing_mm, voxel_volume_ml=voxel_volume_ml)


def cached_rano(case: Case, labels: Any) -> RanoResult:
    """``measure_rano`` of ``labels`` (X, Y, Z) on the case's grid, once per (case content, labels content).

    Raises:
        CaseError: labels not 3-D integers within {0, 1, 2, 4}.
    """
    sx, sy, sz = (float(s) for s in case.spacing_mm)
    return _rano_cached(case.content_key, labels_digest(labels), labels, (sx, sy, sz), case.voxel_volume_ml)
