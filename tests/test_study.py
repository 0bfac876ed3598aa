"""Tests of the raw-study path (``core.data.study``, ``core.data.registration``, ``core.data.brainmask``):
name guessing, refusals, a known rigid transform recovered, write-back to native space, pass-through; and,
with ``../shared/data``, the raw TCGA-FG-6692 study against BraTS's own preprocessing of it (TCIA-example)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nifti

from core.__main__ import main
from core.data import study
from core.data.io import load_volume, volume_from_array
from core.data.registration import (
    BRATS_AFFINE,
    BRATS_SHAPE,
    brats_volume,
    chain,
    inverse,
    linear_transform,
    matrix_of,
    ncc,
    normalised_mi,
    ras_array,
    register_rigid,
    resample,
    save_transform,
    to_sitk,
)
from core.errors import RegistrationError, StudyError

# A scanner-like grid: stored LAS, 2 x 2 x 4 mm voxels, oblique (10 degrees about the left-right axis).
_TILT = np.deg2rad(10.0)
NATIVE_AFFINE = np.array([
    [-2.0, 0.0, 0.0, 40.0],
    [0.0, 2.0 * np.cos(_TILT), -4.0 * np.sin(_TILT), -40.0],
    [0.0, 2.0 * np.sin(_TILT), 4.0 * np.cos(_TILT), -30.0],
    [0.0, 0.0, 0.0, 1.0],
])
NATIVE_SHAPE = (40, 40, 16)


def phantom(shape: tuple[int, int, int] = NATIVE_SHAPE) -> np.ndarray:
    """A head-like phantom in stored voxel order: scalp shell, brain, two unequal ventricles and a bright
    off-centre lesion (no symmetry a rigid fit could fold onto). int16."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(x**2 + (y / 0.9) ** 2 + (z / 0.8) ** 2)
    img = np.zeros(shape, dtype=np.float64)
    img[r < 0.95] = 900.0  # scalp and skull
    img[r < 0.8] = 400.0  # brain
    img[((x - 0.2) ** 2 + y**2 / 0.2 + z**2 / 0.3) < 0.05] = 100.0  # left ventricle
    img[((x + 0.25) ** 2 + y**2 / 0.3 + z**2 / 0.2) < 0.03] = 150.0  # right ventricle
    img[((x - 0.35) ** 2 + (y - 0.4) ** 2 + (z - 0.2) ** 2) < 0.02] = 1200.0  # lesion
    return img.astype(np.int16)


# ------------------------------------------------------------------------------------------- names ---

@pytest.mark.parametrize(("name", "expected"), [
    ("MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz", "flair"),
    ("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c.nii.gz", "t1ce"),
    ("MRHR_T2_AX_SE_2_tse2d1_11_t2.nii.gz", "t2"),
    ("T1_AX_OtherEXampleTCIA_SE_10_se2d1_t1.nii.gz", "t1"),
    ("series_fla.nii", "flair"),
    ("T2_FLAIR_axial.nii.gz", "flair"),
    ("t1_gd.nii.gz", "t1ce"),
    ("T1w_post_contrast.nii.gz", "t1ce"),
    ("sub-01_T1w.nii.gz", "t1"),
    ("sub-01_T2w.nii.gz", "t2"),
    ("BraTS2021_00000_t1ce.nii.gz", "t1ce"),
    ("flair.nii.gz", "flair"),  # the names python -m core convert writes
    ("t1ce.nii.gz", "t1ce"),
    ("t1.nii.gz", "t1"),
    ("t2.nii.gz", "t2"),
    ("series-7.nii.gz", None),
    ("localizer_3plane.nii.gz", None),
    ("DWI_b1000.nii.gz", None),
])
def test_guess_sequence(name: str, expected: str | None) -> None:
    assert study.guess_sequence(name) == expected


def test_find_series_guesses_ignores_and_lets_flags_override(tmp_path: Path) -> None:
    img = phantom()
    for name in ("a_fla.nii.gz", "b_t1c.nii.gz", "c_t1.nii.gz", "scout.nii.gz"):
        write_nifti(tmp_path / name, img, NATIVE_AFFINE)
    other = write_nifti(tmp_path / "elsewhere" / "my_t1.nii.gz", img, NATIVE_AFFINE)
    found = study.find_series(tmp_path)
    assert {k: p.name for k, p in found.series.items()} == {"flair": "a_fla.nii.gz", "t1": "c_t1.nii.gz",
                                                           "t1ce": "b_t1c.nii.gz"}
    assert "scout.nii.gz" in found.ignored
    found = study.find_series(tmp_path, {"t1": other})
    assert found.series["t1"] == other
    assert found.ignored["c_t1.nii.gz"].startswith("T1 named explicitly")


def test_find_series_refuses_two_files_of_one_sequence(tmp_path: Path) -> None:
    write_nifti(tmp_path / "x_t2.nii.gz", phantom(), NATIVE_AFFINE)
    write_nifti(tmp_path / "y_T2w.nii.gz", phantom(), NATIVE_AFFINE)
    with pytest.raises(StudyError, match="expected one T2 file in the study, got 2.*--t2"):
        study.find_series(tmp_path)


# ------------------------------------------------------------------------------------------- refusals ---

def test_missing_reference_is_refused(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "a_fla.nii.gz", phantom(), NATIVE_AFFINE)
    q = write_nifti(tmp_path / "a_t2.nii.gz", phantom(), NATIVE_AFFINE)
    with pytest.raises(StudyError, match="expected a T1CE series .*found FLAIR, T2"):
        study.preprocess_study({"flair": p, "t2": q}, tmp_path / "out", "x")


def test_reference_alone_is_refused(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "a_t1c.nii.gz", phantom(), NATIVE_AFFINE)
    with pytest.raises(StudyError, match="at least one other sequence"):
        study.preprocess_study({"t1ce": p}, tmp_path / "out", "x")


def test_localiser_is_refused(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "a_t1c.nii.gz", phantom(), NATIVE_AFFINE)
    scout = write_nifti(tmp_path / "a_fla.nii.gz", phantom((40, 40, 3)), NATIVE_AFFINE)
    with pytest.raises(StudyError, match=r"FLAIR \(a_fla.nii.gz\): expected a 3-D series .* got shape \(40, 40, 3\)"):
        study.preprocess_study({"t1ce": p, "flair": scout}, tmp_path / "out", "x")


def test_coregistration_that_does_not_converge_is_refused(tmp_path: Path) -> None:
    """Noise is no second sequence of the same head: the alignment measure stays under the threshold."""
    p = write_nifti(tmp_path / "a_t1c.nii.gz", phantom(), NATIVE_AFFINE)
    noise = np.random.default_rng(3).integers(0, 1000, size=NATIVE_SHAPE).astype(np.int16)
    q = write_nifti(tmp_path / "a_t2.nii.gz", noise, NATIVE_AFFINE)
    with pytest.raises(RegistrationError, match="co-registration of T2 to T1CE did not converge"):
        study.preprocess_study({"t1ce": p, "t2": q}, tmp_path / "out", "x")


def test_cli_missing_sequence_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nifti(tmp_path / "s" / "a_fla.nii.gz", phantom(), NATIVE_AFFINE)
    write_nifti(tmp_path / "s" / "a_t2.nii.gz", phantom(), NATIVE_AFFINE)
    assert main(["preprocess", str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: expected a T1CE series")


def test_segment_native_study_without_record_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "c"
    for seq in ("flair", "t1ce"):
        write_nifti(case / f"c_{seq}.nii.gz", phantom((12, 10, 10)))
    assert main(["segment", str(case), "--out", str(tmp_path / "o"), "--native-study", str(case)]) == 2
    assert "preprocessing/study.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- geometry ---

def test_to_sitk_keeps_world_positions() -> None:
    """A voxel's ITK physical point is its nibabel world point with x and y negated (RAS -> LPS)."""
    vol = volume_from_array(phantom(), NATIVE_AFFINE)
    img = to_sitk(vol)
    for ijk in [(0, 0, 0), (5, 7, 3), (39, 39, 15)]:
        ras = vol.affine @ np.array([*ijk, 1.0])
        lps = img.TransformIndexToPhysicalPoint([int(v) for v in ijk])
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-6)
    np.testing.assert_array_equal(ras_array(img), vol.data.astype(np.float32))


def test_brats_grid_matches_brats_files() -> None:
    ref = brats_volume()
    assert ref.original_shape == BRATS_SHAPE and ref.original_axcodes == ("L", "P", "S")
    np.testing.assert_allclose(ref.original_affine, BRATS_AFFINE)


def test_chain_and_inverse() -> None:
    a = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (5.0, 0.0, -2.0))
    b = linear_transform(np.diag([1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, 1.5], [0, 0, 0, 0], [0, 0, 0, 0],
                                                                      [0, 0, 0, 0]]))
    p = (10.0, -4.0, 7.0)
    np.testing.assert_allclose(chain(a, b).TransformPoint(p), b.TransformPoint(a.TransformPoint(p)), atol=1e-9)
    np.testing.assert_allclose(inverse(a).TransformPoint(a.TransformPoint(p)), p, atol=1e-9)
    np.testing.assert_allclose(matrix_of(a)[:3, 3], np.array(a.TransformPoint((0.0, 0.0, 0.0))), atol=1e-9)


def test_alignment_measures_by_hand() -> None:
    a = np.arange(24, dtype=float).reshape(2, 3, 4)
    assert ncc(a, 2 * a + 1) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert np.isnan(ncc(a, np.ones_like(a)))
    assert normalised_mi(a, a, bins=4) == pytest.approx(2.0)
    checker = np.indices((8, 8, 8)).sum(axis=0) % 2
    rows = np.indices((8, 8, 8))[0] % 2
    assert normalised_mi(checker, rows, bins=2) == pytest.approx(1.0)


def test_known_rigid_transform_is_recovered() -> None:
    """The phantom moved by 6 degrees and (4, -3, 5) mm: the rigid registration finds it within 1 mm."""
    vol = volume_from_array(phantom(), NATIVE_AFFINE)
    fixed = to_sitk(vol)
    truth = sitk.Euler3DTransform()
    truth.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()]))
    truth.SetRotation(np.deg2rad(6.0), 0.0, np.deg2rad(-4.0))
    truth.SetTranslation((4.0, -3.0, 5.0))
    # moving(p) = fixed(truth^-1(p)): registering moving onto fixed must find truth (fixed -> moving points).
    moving_big = sitk.Resample(fixed, [60, 60, 30], inverse(truth), sitk.sitkLinear,
                               fixed.TransformContinuousIndexToPhysicalPoint([-10, -10, -7]),
                               fixed.GetSpacing(), fixed.GetDirection(), 0.0, fixed.GetPixelID())
    reg = register_rigid(fixed, moving_big, shrink=(2, 1), sigmas_mm=(2.0, 0.0), sampling=0.5, iterations=300)
    pts = np.array([fixed.TransformIndexToPhysicalPoint(ijk) for ijk in [(10, 10, 4), (30, 30, 12), (20, 5, 8)]])
    found = np.array([reg.transform.TransformPoint(p.tolist()) for p in pts])
    expected = np.array([truth.TransformPoint(p.tolist()) for p in pts])
    assert np.abs(found - expected).max() < 1.0


# ------------------------------------------------------------------------------------------- back to native ---

def _fake_case(tmp_path: Path, atlas_tx: sitk.Transform, coreg: dict[str, sitk.Transform]) -> Path:
    """A preprocessed case folder made by hand: the record and transforms ``write_native_labels`` reads."""
    case = tmp_path / "case"
    rec_dir = case / study.RECORD_DIR
    rec_dir.mkdir(parents=True)
    series = {}
    for seq, tx in coreg.items():
        save_transform(tx, rec_dir / f"coreg_{seq}.tfm")
        series[seq] = {"file": f"raw_{seq}.nii.gz", "shape": list(NATIVE_SHAPE),
                       "affine": NATIVE_AFFINE.tolist()}
    save_transform(atlas_tx, rec_dir / "atlas.tfm")
    (rec_dir / study.RECORD_FILE).write_text(json.dumps({"version": study.RECORD_VERSION, "series": series}))
    return case


def test_write_back_to_native_round_trip(tmp_path: Path) -> None:
    """Labels drawn on a native grid, carried to BraTS space with the case's transforms, come back to the same
    voxels on that grid (nearest neighbour both ways; the BraTS grid is finer, so nothing is lost)."""
    native = volume_from_array(phantom(), NATIVE_AFFINE)
    labels_native = np.zeros(native.shape, dtype=np.uint8)
    labels_native[12:26, 14:24, 5:11] = 2
    labels_native[16:22, 16:21, 7:9] = 4
    atlas_tx = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.05, -0.1, 0.2, (-120.0, 110.0, -70.0))
    coreg = {"t1ce": sitk.Euler3DTransform(), "t2": sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.03, 0.0,
                                                                           (1.0, -2.0, 3.0))}
    case = _fake_case(tmp_path, atlas_tx, coreg)
    brats = brats_volume()
    grid = to_sitk(brats, pixel=sitk.sitkUInt8)
    to_native = study.native_transforms(case)
    for seq in ("t1ce", "t2"):
        in_brats = resample(to_sitk(native, labels_native, sitk.sitkUInt8), grid, to_native[seq], nearest=True)
        labels_brats = ras_array(in_brats)
        assert np.count_nonzero(labels_brats == 4) > 0
        out = study.write_native_labels(case, brats, labels_brats, tmp_path / "out", "c", sequences=[seq])
        written = nib.load(out[seq])
        assert written.shape == NATIVE_SHAPE
        np.testing.assert_allclose(written.affine, NATIVE_AFFINE, atol=1e-5)
        back = load_volume(out[seq]).data
        assert set(np.unique(back)) <= {0, 2, 4}
        agree = np.mean(back == labels_native)
        assert agree > 0.995, (seq, agree)


def test_write_back_needs_a_record(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="run python -m core preprocess first"):
        study.load_record(tmp_path)


# ------------------------------------------------------------------------------------------- pass-through ---

def test_brats_space_study_is_passed_through_untouched(tmp_path: Path) -> None:
    arr = np.zeros(BRATS_SHAPE, dtype=np.int16)
    arr[60:180, 50:190, 20:130] = 300
    src = tmp_path / "src"
    paths = {seq: write_nifti(src / f"x_{seq}.nii.gz", np.where(arr > 0, arr + i, 0).astype(np.int16), BRATS_AFFINE)
             for i, seq in enumerate(("flair", "t1ce"))}
    res = study.preprocess_study(paths, tmp_path / "out", "case 1")
    assert res.case_id == "case_1" and res.record["passthrough"] is True
    for seq, p in paths.items():
        assert res.images[seq].name == f"case_1_{seq}.nii.gz"
        assert res.images[seq].read_bytes() == p.read_bytes()
    # write-back through identity transforms lands on the same grid
    labels = np.zeros(BRATS_SHAPE, dtype=np.uint8)
    labels[100:120, 100:120, 60:70] = 1
    ref = load_volume(res.images["t1ce"])
    out = study.write_native_labels(res.case_dir, ref, labels,
                                    tmp_path / "seg", "c", sequences=["t1ce"])
    np.testing.assert_array_equal(load_volume(out["t1ce"]).data, labels)


def test_skull_on_study_in_brats_grid_is_not_passed_through() -> None:
    full = np.full(BRATS_SHAPE, 100, dtype=np.int16)
    vol = volume_from_array(full, BRATS_AFFINE)
    assert not study.is_brats_ready({"t1ce": vol})


# ------------------------------------------------------------------------------------------- the raw case ---

@pytest.fixture(scope="module")
def raw_result(tmp_path_factory: pytest.TempPathFactory) -> study.StudyResult:
    from core import config

    shared = config.shared_data_dir()
    if shared is None or not (shared / "raw" / "TCGA-FG-6692").is_dir():
        pytest.skip("../shared/data/raw/TCGA-FG-6692 not found: set BRATS_SHARED_DATA or place shared/ beside "
                    "the project")
    files = study.find_series(shared / "raw" / "TCGA-FG-6692")
    messages: list[tuple[float, str]] = []
    res = study.preprocess_study(files.series, tmp_path_factory.mktemp("raw"), "TCGA-FG-6692",
                                 progress=lambda f, m: messages.append((f, m)))
    res.record["_progress"] = messages
    return res


@pytest.mark.shared
@pytest.mark.slow
def test_raw_case_matches_brainles(raw_result: study.StudyResult) -> None:
    """Against TCIA-example (the same study after BraTS's BrainLes pipeline): brain Dice >= 0.90 and every
    sequence correlates with theirs; BraTS naming and grid; progress reported from 0 to 1."""
    from core import config

    ref_dir = config.shared_data_dir() / "brats" / "extra" / "TCIA-example"
    theirs_brain = load_volume(ref_dir / "TCIA-example_t1ce.nii.gz").data != 0
    mask = load_volume(raw_result.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
    dice = 2 * np.count_nonzero(mask & theirs_brain) / (mask.sum() + theirs_brain.sum())
    assert dice >= 0.90
    for seq in ("flair", "t1", "t1ce", "t2"):
        ours = load_volume(raw_result.images[seq])
        assert ours.original_shape == BRATS_SHAPE and ours.original_axcodes == ("L", "P", "S")
        theirs = load_volume(ref_dir / f"TCIA-example_{seq}.nii.gz").data
        assert ncc(ours.data, theirs, mask & theirs_brain) > 0.5, seq
    fractions = [f for f, _ in raw_result.record["_progress"]]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


@pytest.mark.shared
@pytest.mark.slow
def test_raw_case_records_its_path_and_acceptance(raw_result: study.StudyResult) -> None:
    """study.json says which path ran (a head) and every acceptance measure with its threshold, accepted."""
    rec = json.loads((raw_result.case_dir / "preprocessing" / "study.json").read_text())
    assert rec["input_path"] == "head"
    acc = rec["acceptance"]
    assert acc["accepted"] is True
    assert set(acc["measures"]) == {"atlas_ncc", "midline_tilt_deg", "midline_offset_mm", "symmetry", "mask_dice",
                                    "pose_margin", "fine_pose_margin"}
    assert set(acc["thresholds"]) == {"min_atlas_ncc", "max_midline_tilt_deg", "max_midline_offset_mm",
                                      "min_symmetry", "min_mask_dice", "min_pose_margin",
                                      "min_fine_pose_margin"}
    assert acc["measures"]["midline_tilt_deg"] < 2.0 and acc["measures"]["mask_dice"] > 0.95


def _pose_sweep_module():  # noqa: ANN202 - the benchmark script, imported for its study-posing helpers
    import sys

    bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import pose_sweep

    return pose_sweep


# The hardest poses of benchmarks/pose_sweep.py: two corners (+-20 degrees about every axis, +-30 mm along every
# axis) that, added to the study's own 18 degree pitch, turn the head furthest from the atlas; and the seeded random
# pose (its 12th) that the pose search left 4-5 degrees off in pitch, where a rigid fit that stopped after 4
# iterations kept it (correlation 0.739 with the unmoved result, accepted).
HARD_POSES = [(-20.0, 20.0, 20.0, (-30.0, -30.0, 30.0)), (20.0, 20.0, -20.0, (30.0, -30.0, -30.0)),
              (5.00750561956087, 5.504967516522626, -14.949164338725307,
               (7.569966660986566, 17.225508641165796, -29.555937640526416))]


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("pose", HARD_POSES, ids=["corner-a", "corner-b", "random-12"])
def test_raw_case_in_another_head_pose_reaches_the_same_result(raw_result: study.StudyResult, tmp_path: Path,
                                                               pose: tuple) -> None:
    """The raw study with its headers turned (yaw, pitch, roll) and shifted, voxels untouched: accepted; its brain
    mask agrees with the unmoved study's (Dice >= 0.95) and its BraTS-space T1CE correlates >= 0.90 with the
    unmoved study's inside both masks (about 30 s each on two cores).

    Inside both masks, because the outputs are masked: a brain mask that differs by a voxel at the edge (Dice 0.993)
    puts bright dura against zero and alone drops the correlation over one mask to 0.87 (benchmarks/pose_sweep.py
    prints both)."""
    from core import config

    files = study.find_series(config.shared_data_dir() / "raw" / "TCGA-FG-6692").series
    posed = _pose_sweep_module().posed_study(files, tmp_path / "in", pose[0], pose[1], pose[2], pose[3])
    res = study.preprocess_study(posed, tmp_path / "out", "posed")
    brain = load_volume(raw_result.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
    posed_brain = load_volume(res.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
    assert res.record["acceptance"]["accepted"] is True
    assert 2 * np.count_nonzero(brain & posed_brain) / (brain.sum() + posed_brain.sum()) >= 0.95
    ref = load_volume(raw_result.images["t1ce"]).data
    assert ncc(load_volume(res.images["t1ce"]).data, ref, brain & posed_brain) >= 0.90


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(("axis", "deg", "mm", "phrase"), [(0, 10.0, 0.0, "a pose 10 deg or 10 mm away fits"),
                                                          (2, 10.0, 0.0, "midline tilted"),
                                                          (1, 0.0, 20.0, "brain mask Dice"),
                                                          (0, 4.0, 0.0, "stopped short")],
                         ids=["pitch-10deg", "yaw-10deg", "shift-AP-20mm", "pitch-4deg"])
def test_raw_case_misregistered_is_refused_in_one_line(raw_result: study.StudyResult, axis: int, deg: float,
                                                        mm: float, phrase: str) -> None:
    """The correct atlas transform moved by the smallest misregistrations of the benchmark (10 degrees of pitch,
    which moves no midline; 10 of yaw; 20 mm forward) and by 4 degrees of pitch (what a fit that stopped short left,
    and every other measure passed), scored as if the registration had found it: refused, one line naming the
    measure."""
    from core import config
    from core.data.atlas_fit import atlas_reference, fit_atlas, refusal_line
    from core.data.registration import load_transform

    t1ce = load_volume(study.find_series(config.shared_data_dir() / "raw" / "TCGA-FG-6692").series["t1ce"])
    ref = atlas_reference(study.load_atlas())
    wrong = sitk.Euler3DTransform()
    wrong.SetCenter([float(v) for v in ref.centre])
    angles = [0.0, 0.0, 0.0]
    angles[axis] = float(np.deg2rad(deg))
    wrong.SetRotation(*angles)
    shift = [0.0, 0.0, 0.0]
    shift[axis] = mm
    wrong.SetTranslation(shift)
    true = load_transform(raw_result.case_dir / "preprocessing" / "atlas.tfm")
    fit = fit_atlas(t1ce, ref, transform=chain(wrong, true))
    line = refusal_line(fit.check, fit.path)
    assert line is not None and "\n" not in line
    assert phrase in line, line


@pytest.mark.shared
@pytest.mark.slow
def test_brain_only_study_in_scanner_space_reaches_brats_space(tmp_path: Path) -> None:
    """A BraTS case made into a brain-extracted scanner study (5 mm slices, turned 9, -6, 4 degrees, shifted):
    detected as brain-only, registered brain to brain, and its BraTS-space T1CE correlates >= 0.90 with the same
    study resampled by the known true transform (the 5 mm slices themselves cap the correlation with the 1 mm
    original at 0.87; ours reached 0.94 with it and 0.83 with the original).

    Brats18_2013_21_1 because its BraTS space is the shipped atlas's (midline 0.3 degrees from it); the BraTS 2021
    cases here lie 1.5-7 degrees off it, so a registration to the atlas cannot land where they are."""
    import nibabel as nib

    from core import config
    from core.data.registration import linear_transform

    case_dir = config.shared_data_dir() / "brats" / "train" / "Brats18_2013_21_1"
    files = _pose_sweep_module().make_brain_only_study(case_dir, tmp_path / "in")
    res = study.preprocess_study(files, tmp_path / "out", "brain")
    assert res.record["input_path"] == "brain-only" and res.record["acceptance"]["accepted"] is True
    original_img = nib.load(case_dir / "Brats18_2013_21_1_t1ce.nii.gz")
    thick = original_img.affine.copy()
    thick[:3, 2] *= 5.0  # the thick grid shares the original's origin and axes
    motion = nib.load(files["t1ce"]).affine @ np.linalg.inv(thick)  # RAS world motion given to the headers
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    posed = load_volume(files["t1ce"])
    truth = ras_array(resample(to_sitk(posed), to_sitk(brats_volume()), linear_transform(lps @ motion @ lps)))
    brain = load_volume(case_dir / "Brats18_2013_21_1_t1ce.nii.gz").data != 0
    assert ncc(load_volume(res.images["t1ce"]).data, truth, brain) >= 0.90


@pytest.mark.shared
@pytest.mark.slow
def test_raw_case_pseudo_label_goes_back_to_each_series(raw_result: study.StudyResult, tmp_path: Path) -> None:
    """TCIA-example's pseudo-label written back on each original series' grid: same grid as the series, and the
    tumour lands inside the head (voxels of the series above its background level)."""
    from core import config

    shared = config.shared_data_dir()
    seg = load_volume(shared / "brats" / "extra" / "TCIA-example" / "TCIA-example_seg.nii.gz")
    out = study.write_native_labels(raw_result.case_dir, seg, seg.data, tmp_path, "TCGA-FG-6692")
    files = study.find_series(shared / "raw" / "TCGA-FG-6692").series
    for seq, path in out.items():
        native = load_volume(files[seq])
        back = load_volume(path)
        assert back.original_shape == native.original_shape
        np.testing.assert_allclose(back.original_affine, native.original_affine, atol=1e-4)
        tumour = back.data > 0
        assert tumour.sum() * np.prod(native.spacing_mm) / 1000 > 5.0  # mL: the lesion is tens of mL
        assert np.median(native.data[tumour]) > np.percentile(native.data, 60), seq


@pytest.mark.slow
def test_atlas_registration_that_does_not_converge_is_refused(tmp_path: Path) -> None:
    """A head of inverted contrast (dark brain, bright ventricles) co-registers with itself but cannot match the
    T1 atlas: the correlation with the atlas stays under the threshold (about 10 s)."""
    affine = np.diag([-3.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (96.0, -96.0, -80.0)
    head = phantom((64, 64, 40)).astype(np.float64)
    inverted = np.where(head > 0, 1300.0 - head, 0.0).astype(np.int16)
    p = write_nifti(tmp_path / "a_t1c.nii.gz", inverted, affine)
    q = write_nifti(tmp_path / "a_t2.nii.gz", inverted, affine)
    with pytest.raises(RegistrationError, match=r"to the atlas refused \((head|brain-only) input\): ") as err:
        study.preprocess_study({"t1ce": p, "t2": q}, tmp_path / "out", "x")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_segment_native_study_writes_labels_on_each_series_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``segment CASE --native-study CASE`` on a preprocessed case (made by hand: BraTS-grid images, the record and
    transforms) writes one label file per original series, on that series' grid, matching the BraTS labels."""
    from core.engine.model import build_unet, save_for_inference
    from core.engine.preprocess import PreprocessSpec

    monkeypatch.setenv("BRATS_VIEWER_WORK_DIR", str(tmp_path / "work"))
    model = tmp_path / "tiny"
    spec = PreprocessSpec(channels=("flair", "t1ce"), input_size=32, normalisation="zscore_brain", crop="brain_bbox")
    save_for_inference(build_unet(32, 2, 4, 2, seed=5), model, spec)
    atlas_tx = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.05, -0.1, 0.2, (-120.0, 110.0, -70.0))
    case = _fake_case(tmp_path, atlas_tx, {"t1ce": sitk.Euler3DTransform(), "flair": sitk.Euler3DTransform()})
    arr = np.zeros(BRATS_SHAPE, dtype=np.int16)
    arr[100:140, 90:150, 60:90] = 300
    arr[110:125, 100:120, 70:80] = 900
    for seq in ("flair", "t1ce"):
        write_nifti(case / f"case_{seq}.nii.gz", arr, BRATS_AFFINE)
    out = tmp_path / "seg"
    code = main(["segment", str(case), "--out", str(out), "--model", str(model), "--native-study", str(case)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"native_flair", "native_t1ce"} <= set(summary["outputs"])
    seg = load_volume(summary["outputs"]["seg"])
    to_native = study.native_transforms(case)
    for seq in ("flair", "t1ce"):
        written = nib.load(summary["outputs"][f"native_{seq}"])
        assert written.shape == NATIVE_SHAPE
        np.testing.assert_allclose(written.affine, NATIVE_AFFINE, atol=1e-5)
        native = load_volume(summary["outputs"][f"native_{seq}"])
        expected = resample(to_sitk(seg, seg.data, sitk.sitkUInt8),
                            to_sitk(native, pixel=sitk.sitkUInt8), inverse(to_native[seq]), nearest=True)
        np.testing.assert_array_equal(native.data, ras_array(expected))


def test_cli_passes_a_brats_space_study_through(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``preprocess`` on a study already in BraTS space: exit 0, one JSON line, progress on stderr, files copied."""
    arr = np.zeros(BRATS_SHAPE, dtype=np.int16)
    arr[60:180, 50:190, 20:130] = 300
    src = tmp_path / "My Study"
    write_nifti(src / "ax_fla.nii.gz", arr, BRATS_AFFINE)
    t1ce = write_nifti(tmp_path / "elsewhere" / "post.nii.gz", arr, BRATS_AFFINE)
    assert main(["preprocess", str(src), "--t1ce", str(t1ce), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip())
    assert summary["case_id"] == "My_Study" and summary["passthrough"] is True
    assert summary["missing"] == ["t1", "t2"]
    assert Path(summary["images"]["t1ce"]).read_bytes() == t1ce.read_bytes()
    assert "[100%]" in captured.err
