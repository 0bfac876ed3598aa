"""Patient identifiers in DICOM headers, and scrubbing them from what is written, field by field.

``phi_strings`` collects a header's identifier strings (kept in memory only); ``scrub_text`` removes them from one
text as whole words; ``scrub_listing`` applies it to the free-text fields of a study listing, never to its JSON
text (a patient id "130" must not touch a count of 130 files, nor an id "dicom" the key "dicom_files").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

PHI_NOTE = ("Patient identifiers (name, ID, birth date, accession number, UIDs, institution) are not copied into "
            "any file written: series are listed by number and description only.")
PHI_TAGS: tuple[str, ...] = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")


def phi_strings(ds: Any) -> set[str]:
    """The patient's identifier strings of one header (name parts of 3+ letters, IDs, birth date)."""
    out: set[str] = set()
    for tag in PHI_TAGS:
        value = ds.get(tag)
        if value is None:
            continue
        text = str(value).strip()
        if tag == "PatientName":
            out.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3)
        elif len(text) >= 3:
            out.add(text)
    return out


def scrub_text(text: str, phi: Iterable[str]) -> str:
    """``text`` with every whole-word occurrence of the identifier strings ``phi`` replaced by ``[removed]``.

    Any case; a match must not touch a letter or digit on either side (``_``, ``-``, ``.``, spaces and the text's
    ends are boundaries), so that an identifier "Ann" removes "Ann" and "ann_t1" but leaves "Planning" whole.
    """
    for item in sorted(set(phi), key=len, reverse=True):
        text = re.sub(r"(?<![A-Za-z0-9])" + re.escape(item) + r"(?![A-Za-z0-9])", "[removed]", text,
                      flags=re.IGNORECASE)
    return text


SCRUBBED_FIELDS: tuple[str, ...] = ("description", "protocol", "guess_reason", "name_reason", "refusal", "warnings")


def scrub_listing(listing: Mapping[str, Any], phi: Iterable[str]) -> dict[str, Any]:
    """A copy of a study listing with the identifier strings ``phi`` scrubbed from each series' free-text fields
    (``SCRUBBED_FIELDS``: texts copied from headers or quoting them), field by field. Keys, numbers and the
    names of written files are left as they are (a patient id "130" must not touch a count of 130 files)."""
    phi = tuple(phi)
    out = dict(listing)
    rows = []
    for row in listing.get("series", []):
        row = dict(row)
        for key in SCRUBBED_FIELDS:
            value = row.get(key)
            if isinstance(value, str):
                row[key] = scrub_text(value, phi)
            elif isinstance(value, list):
                row[key] = [scrub_text(v, phi) if isinstance(v, str) else v for v in value]
        rows.append(row)
    out["series"] = rows
    return out
