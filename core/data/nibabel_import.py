"""nibabel, imported once for the whole project with pydicom hidden from it (``nib``, ``ornt_mod``).

nibabel imports pydicom (about 0.14 s of every process's start) only to parse DICOM header extensions inside
NIfTI files, which this project never reads. Hidden, such an extension stays raw bytes, so the DICOM embedded
in an uploaded NIfTI is never parsed either. pydicom itself imports normally afterwards (``core.data.dicom``).
Modules of the project import nibabel from here, so the behaviour does not depend on import order.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_nibabel_without_pydicom() -> ModuleType:
    """``nibabel`` with its NIfTI module imported while ``import pydicom`` fails (pydicom restored after)."""
    if "nibabel.nifti1" not in sys.modules:
        saved = sys.modules.get("pydicom")
        sys.modules["pydicom"] = None  # type: ignore[assignment]  # makes "import pydicom" raise ImportError
        try:
            import nibabel.nifti1  # noqa: F401
        finally:
            if saved is None:
                del sys.modules["pydicom"]
            else:
                sys.modules["pydicom"] = saved
    import nibabel

    return nibabel


nib = import_nibabel_without_pydicom()
ornt_mod = nib.orientations
