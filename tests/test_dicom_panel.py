"""AppTest of the Case browser's DICOM tab (core/app/dicom_panel.py): a DICOM study in a folder inside the data
roots is read, its series listed with guesses and refusals, and opened as a case; no patient identifier reaches
the page or the audit log. (AppTest cannot fill a file uploader: the zip route is covered by test_dicom.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_page, texts
from dicom_factory import PHI_STRINGS, oblique_iop, write_series

from core.app import dicom_panel, ui
from core.data import roots
from core.errors import DataFolderError

BROWSER = "pages/1_Case_browser.py"


@pytest.fixture
def dicom_root(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "dicomroot"
    study = root / "study1"
    write_series(study, description="AX FLAIR", series_number=2, prefix="a")
    write_series(study, description="AX T1 post gad", series_number=5, prefix="b", rows=6, pixel_spacing=(1.0, 1.0))
    write_series(study, description="T2 oblique", series_number=7, prefix="c", iop=oblique_iop())
    write_series(study, description="3-plane loc", series_number=1, prefix="d", n_slices=3,
                 slice_iops={1: (0, 1, 0, 0, 0, -1), 2: (1, 0, 0, 0, 0, -1)})
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    return root


def _read_folder(at):
    at.radio(key="dicom_source").set_value(dicom_panel.SOURCE_FOLDER).run()
    label = next(opt for opt in at.selectbox(key="dicom_root").options if opt.endswith("dicomroot"))
    at.selectbox(key="dicom_root").set_value(label).run()
    at.selectbox(key="dicom_sub").set_value("study1")
    return at.button(key="dicom_read").click().run()


def test_dicom_tab_lists_series_and_opens_a_case(dicom_root: Path, app_env: Path) -> None:
    at = run_page(BROWSER, timeout=60)
    assert not at.exception
    assert dicom_panel.dicom.PHI_NOTE in texts(at.info)
    at = _read_folder(at)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert "4 series in" in texts(at.caption)
    frames = [df.value for df in at.dataframe]
    refused = next(f for f in frames if "Reason" in f.columns)
    assert list(refused["Series"]) == ["1"] and "mixed slice orientations" in refused["Reason"].iloc[0]
    at.button(key="dicom_open").click().run()
    assert not at.exception, at.exception
    sel = at.session_state[ui.KEY_CASE]
    assert sel["kind"] == "upload" and sel["case_id"].startswith("dicom-")
    case = at.session_state[ui.KEY_UPLOADED]
    assert set(case.modalities) == {"flair", "t1ce", "t2"}
    assert "resampled onto the T1CE grid" in case.notes
    page_text = "\n".join(texts(getattr(at, kind)) for kind in ("markdown", "caption", "info", "success", "warning"))
    audit = (app_env / "audit.log.jsonl").read_text()
    assert "dicom_convert" in audit
    for s in PHI_STRINGS:
        assert s.lower() not in page_text.lower() and s.lower() not in audit.lower()


def test_dicom_tab_offers_only_folders_inside_the_roots(dicom_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside_dicom"
    outside.mkdir()
    (dicom_root / "link_out").symlink_to(outside, target_is_directory=True)
    at = run_page(BROWSER, timeout=60)
    at.radio(key="dicom_source").set_value(dicom_panel.SOURCE_FOLDER).run()
    label = next(opt for opt in at.selectbox(key="dicom_root").options if opt.endswith("dicomroot"))
    at.selectbox(key="dicom_root").set_value(label).run()
    options = at.selectbox(key="dicom_sub").options
    assert "study1" in options and not any("link_out" in o or ".." in o for o in options)  # a picker, no free text
    assert not [w for w in at.text_input if w.key == "dicom_sub"]
    with pytest.raises(DataFolderError, match="inside the allowed data roots"):
        roots.subfolders(outside)


def test_uploaded_zip_is_read_without_using_member_names(tmp_path: Path) -> None:
    import io
    import zipfile

    folder, _, _ = write_series(tmp_path / "dcm", description="AX FLAIR")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"DOE_JANETH/{p.name}")
    study = dicom_panel._read_zip(buf.getvalue())
    (s,) = study.series
    assert s.usable and s.guess == "flair" and s.data is not None
    assert all("DOE" not in str(p) for p in s.files)


def test_a_folder_of_two_patients_is_said_and_not_opened_as_one_case(dicom_root: Path) -> None:
    write_series(dicom_root / "study1", description="AX FLAIR", series_number=9, prefix="e", patient_id="P-2222",
                 patient_name="Roe^Richard", study_uid="1.2.3.99")
    at = _read_folder(run_page(BROWSER, timeout=60))
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "2 studies of 2 patient(s)" in warning and "Open one study at a time" in warning
    assert "P-2222" not in warning and "Roe" not in warning
    at.button(key="dicom_open").click().run()
    assert not at.exception, at.exception
    assert "several" in texts(at.error) and ui.KEY_UPLOADED not in at.session_state


def test_series_are_listed_by_series_number(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the series were listed in SeriesInstanceUID order, not by series number as a PACS lists them."""
    root = tmp_path / "dicomroot"
    study = root / "study1"
    for number, prefix in ((11, "a"), (3, "b"), (7, "c"), (5, "d")):  # UIDs follow the prefix, not the number
        write_series(study, description=f"AX FLAIR {number}", series_number=number, prefix=prefix)
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    at = _read_folder(run_page(BROWSER, timeout=60))
    assert not at.exception, at.exception
    table = next(df.value for df in [*at.dataframe, *at.get("arrow_data_frame")] if "Series" in df.value.columns)
    assert list(table["Series"]) == ["3", "5", "7", "11"]


def test_the_root_picker_names_each_sub_folder_once(dicom_root: Path) -> None:
    """Bug: the first picker listed the roots and their sub-folders, and the second the sub-folders again."""
    (dicom_root / "site" / "study2").mkdir(parents=True)
    at = run_page(BROWSER, timeout=60)
    at.radio(key="dicom_source").set_value(dicom_panel.SOURCE_FOLDER).run()
    roots_offered = list(at.selectbox(key="dicom_root").options)
    assert not [o for o in roots_offered if "/" in o], roots_offered
    label = next(opt for opt in roots_offered if opt.endswith("dicomroot"))
    at.selectbox(key="dicom_root").set_value(label).run()
    assert {"site", "site/study2", "study1"} <= set(at.selectbox(key="dicom_sub").options)
