"""DICOM input safety: zip archives extracted under generated names, folders walked within limits.

``safe_extract_zip`` never uses a member's name as a path; path-climbing names, links, encrypted members, too many
members and too many bytes (counted while inflating, not trusted from the directory) refuse the whole archive.
``walk_files`` lists a folder's regular files (links not followed) within the same limits.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from pathlib import Path

from core.errors import DicomError

MAX_FILES: int = 20_000  # DICOM files (or zip members) in one study
MAX_FILE_BYTES: int = 64 * 1024 * 1024  # one DICOM file (a 1024 x 1024 float64 slice is 8 MB)
MAX_TOTAL_BYTES: int = 2 * 1024**3  # all files of one study, decompressed
MAX_RATIO: int = 200  # a zip member inflating more than this many times its compressed size is a bomb


def _is_unsafe_member_name(name: str) -> bool:
    parts = re.split(r"[\\/]+", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts or "\x00" in name


def safe_extract_zip(source: str | os.PathLike[str] | bytes, dest: str | os.PathLike[str], *,
                     max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES,
                     max_file_bytes: int = MAX_FILE_BYTES, max_ratio: int = MAX_RATIO) -> int:
    """Extract the regular files of a zip archive into ``dest`` under generated names (``000001.dcm``, ...).

    Member names are never used as paths; an archive whose names climb out of it (``../``, absolute, drive
    letters) is refused whole, as are links, encrypted members, more than ``max_files`` members, a member over
    ``max_file_bytes`` or inflating more than ``max_ratio`` times, and more than ``max_total_bytes`` in all.
    Sizes are counted while inflating: the archive's own directory is not trusted.

    Returns:
        The number of files written.

    Raises:
        DicomError: not a zip archive, or any of the refusals above (one line, no member name).
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes | bytearray) else Path(source))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DicomError(f"expected a zip archive of DICOM files, got an unreadable archive ({err})") from err
    with zf:
        members = zf.infolist()
        files = [m for m in members if not m.is_dir()]
        if len(members) > max_files * 2 or len(files) > max_files:
            raise DicomError(f"expected at most {max_files:,} files in the archive, got {len(files):,} files "
                             f"in {len(members):,} entries")
        declared = sum(m.file_size for m in files)
        if declared > max_total_bytes:
            raise DicomError(f"expected at most {max_total_bytes // 2**20:,} MB once extracted, the archive "
                             f"declares {declared // 2**20:,} MB")
        for pos, m in enumerate(members, start=1):
            if _is_unsafe_member_name(m.filename):
                raise DicomError(f"refused the archive: member {pos} has a path that climbs out of the archive "
                                 "(absolute or '..'); nothing was extracted from it")
        total = 0
        written = 0
        for pos, m in enumerate(files, start=1):
            mode = (m.external_attr >> 16) & 0o170000
            if mode and not stat.S_ISREG(mode):
                raise DicomError(f"refused the archive: member {pos} is a link or special file, not a regular file")
            if m.flag_bits & 0x1:
                raise DicomError(f"refused the archive: member {pos} is encrypted")
            limit = min(max_file_bytes, max_ratio * max(m.compress_size, 1) + 64 * 1024)
            target = out / f"{pos:06d}.dcm"
            size = 0
            try:
                with zf.open(m) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        size += len(chunk)
                        total += len(chunk)
                        if size > limit:
                            raise DicomError(f"refused the archive: member {pos} inflates beyond "
                                             f"{limit // 2**20 or 1} MB (at most {max_file_bytes // 2**20} MB per "
                                             f"file and {max_ratio}x its compressed size): a zip bomb?")
                        if total > max_total_bytes:
                            raise DicomError(f"refused the archive: more than {max_total_bytes // 2**20:,} MB "
                                             "once extracted")
                        dst.write(chunk)
            except DicomError:
                target.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
                    RuntimeError) as err:
                target.unlink(missing_ok=True)
                raise DicomError(f"refused the archive: member {pos} cannot be read ({type(err).__name__})") from err
            written += 1
    return written


def walk_files(root: Path, max_files: int, max_total_bytes: int) -> list[Path]:
    """Regular files under ``root`` (links not followed), sorted, bounded in number and bytes."""
    found: list[Path] = []
    total = 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > MAX_FILE_BYTES:
                continue
            found.append(p)
            total += st.st_size
            if len(found) > max_files:
                raise DicomError(f"expected at most {max_files:,} files in the DICOM folder, found more")
            if total > max_total_bytes:
                raise DicomError(f"expected at most {max_total_bytes // 2**20:,} MB of files in the DICOM folder, "
                                 "found more")
    return found
