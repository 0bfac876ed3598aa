"""The project's exception family. Every refusal of bad input is a subclass of ``ValueError``
whose message is one line saying what was expected and what came."""

from __future__ import annotations


class BratsViewerError(ValueError):
    """Base class of every error this project raises on bad input."""


class ImageFormatError(BratsViewerError):
    """The bytes are not a NIfTI-1/NIfTI-2 image (or gzip of one)."""


class ImageSizeError(BratsViewerError):
    """The image (or its decompressed form) is larger than allowed."""


class ImageContentError(BratsViewerError):
    """The header or voxels are not usable: wrong dimensionality, dtype, NaN, bad spacing or affine."""


class CaseError(BratsViewerError):
    """A case is inconsistent: missing modality, mismatched shapes or affines, bad labels."""


class ModelError(BratsViewerError):
    """A model file is missing, not a model, or does not fit the expected input."""


class DataFolderError(BratsViewerError):
    """A data folder does not exist or a path escapes the chosen folder."""


class RegistrationError(BratsViewerError):
    """Two studies could not be aligned: registration failed or the aligned images do not match."""


class StudyError(BratsViewerError):
    """A raw study cannot be preprocessed: a required sequence missing, names that do not tell the sequences
    apart, or a series that is no 3-D volume (a 2-D localiser)."""


class DicomError(BratsViewerError):
    """DICOM input is unusable: no DICOM files, an unsafe or oversized archive, no convertible series, or a
    sequence override that names no series."""
