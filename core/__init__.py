"""Core of the brain-tumour MRI segmentation viewer: everything that is not page layout.

Research software: not for clinical diagnosis.
"""

from __future__ import annotations

__version__ = "0.1.0"
