"""core/engine/biasfield.py: N4 removes a smooth multiplicative field and keeps the geometry and the background."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.cases import assemble_case
from core.data.io import volume_from_array
from core.engine.biasfield import n4_array, n4_case
from core.errors import CaseError


def _field_volume(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A ball of uniform tissue (100) with two inclusions, under a field rising from 0.7 to 1.3 along X."""
    x, y, z = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    c = (n - 1) / 2
    ball = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 < (0.45 * n) ** 2
    tissue = np.where(ball, 100.0, 0.0)
    tissue[(x - c) ** 2 + (y - c - 8) ** 2 + (z - c) ** 2 < 16] = 160.0  # a bright lesion
    field = 0.7 + 0.6 * x / (n - 1)
    return (tissue * field).astype(np.float32), ball


def _cv_of_uniform_tissue(img: np.ndarray, ball: np.ndarray) -> float:
    vals = img[ball & (np.abs(img - np.median(img[ball])) < 0.5 * np.median(img[ball]))]
    return float(vals.std() / vals.mean())


def test_n4_flattens_a_linear_field() -> None:
    img, ball = _field_volume()
    out = n4_array(img, ball, (1.0, 1.0, 1.0))
    assert out.shape == img.shape and out.dtype == np.float32
    before, after = _cv_of_uniform_tissue(img, ball), _cv_of_uniform_tissue(out, ball)
    assert before > 0.1 and after < 0.7 * before, (before, after)  # measured here: 0.123 -> 0.079
    np.testing.assert_array_equal(out[~ball], img[~ball])  # background untouched


def test_n4_case_keeps_geometry_labels_and_says_so() -> None:
    img, ball = _field_volume(32)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    vols = {k: volume_from_array(img * (i + 1), affine, f"{k}.nii") for i, k in enumerate(("flair", "t1ce"))}
    case = assemble_case("N4", vols, volume_from_array(ball.astype(np.uint8) * 2, affine, "seg.nii"))
    seen: list[str] = []
    out = n4_case(case, lambda f, m: seen.append(m))
    assert out.modalities == case.modalities and out.shape == case.shape
    np.testing.assert_array_equal(out.images["t1ce"].affine, case.images["t1ce"].affine)
    assert out.seg is case.seg and "N4" in out.notes and len(seen) == 2
    with pytest.raises(CaseError, match="empty"):
        n4_array(img, np.zeros_like(ball), (1.0, 1.0, 1.0))
