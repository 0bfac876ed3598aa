"""Where web users may read data and write outputs: the administrator's allowed data roots, and the one
function that turns a user-chosen folder into a safe, resolved path.

Settings (read on every call, so a change applies without a restart):

- ``$BRATS_DATA_ROOTS``: allowed data roots, separated by ``os.pathsep`` (``:`` on Linux);
- the server settings file (``$BRATS_SERVER_CONFIG``, default ``<project>/server.toml``, never editable from
  the web), a TOML file whose ``data_roots = ["/srv/brats", ...]`` line adds roots and whose
  ``upload_ttl_minutes = 120`` bounds how long a session's uploads and corrections are kept;
- always: the bundled demo (``assets/demo``) and the data folder given at start (``$BRATS_DATA_DIR``).

Model folders a session may use are confined the same way to ``model_roots()`` (``models/`` and
``$BRATS_MODEL_ROOTS``).

A folder is allowed when its real path (every symbolic link followed, ``..`` collapsed) lies inside the real
path of a root that exists. Text that could be an encoded way around this (percent-encoding, NUL or other
control characters, backslashes, Unicode look-alikes that NFKC-normalise to something else) is refused
before any file-system call, so nothing outside the roots can be listed, opened, read or written.
"""

from __future__ import annotations

import os
import re
import time
import tomllib
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import config
from core.errors import DataFolderError

ROOTS_ENV = "BRATS_DATA_ROOTS"
MODEL_ROOTS_ENV = "BRATS_MODEL_ROOTS"
SERVER_CONFIG_ENV = "BRATS_SERVER_CONFIG"
DATA_DIR_LABEL_ENV = "BRATS_DATA_DIR_LABEL"  # the label shown for $BRATS_DATA_DIR's folder
MAX_LABEL_CHARS = 60
DEFAULT_SERVER_CONFIG: Path = config.PROJECT_ROOT / "server.toml"
DEFAULT_UPLOAD_TTL_MINUTES: float = 120.0
MAX_PICKER_FOLDERS = 200  # folders offered by the picker (roots first)
PICKER_CACHE_S = 10.0  # the picker's folder scan is reused this long (it runs on every page run)
_picker_cache: dict[tuple[Any, ...], tuple[float, dict[str, Path]]] = {}
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_MAX_PATH_CHARS = 4096


def _server_config_path() -> Path:
    value = os.environ.get(SERVER_CONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_SERVER_CONFIG


def server_settings() -> dict[str, Any]:
    """The server settings file as a dict ({} when absent or unreadable: the defaults then apply)."""
    try:
        with open(_server_config_path(), "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def upload_ttl_minutes() -> float:
    """How long a session's uploads and corrections live (minutes): ``$BRATS_UPLOAD_TTL_MINUTES``, else the
    settings file's ``upload_ttl_minutes``, else 120. Non-positive or unreadable values give the default."""
    raw: Any = os.environ.get("BRATS_UPLOAD_TTL_MINUTES", "").strip() or server_settings().get("upload_ttl_minutes")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return DEFAULT_UPLOAD_TTL_MINUTES
    return value if value > 0 else DEFAULT_UPLOAD_TTL_MINUTES


def _env_entries() -> list[tuple[str | None, Path]]:
    """``$BRATS_DATA_ROOTS`` entries as (label or None, path): an entry ``Label=/path`` names its root."""
    out: list[tuple[str | None, Path]] = []
    for part in os.environ.get(ROOTS_ENV, "").split(os.pathsep):
        part = part.strip()
        if not part:
            continue
        label, sep, rest = part.partition("=")
        if sep and rest.strip().startswith(("/", "~")) and "/" not in label:
            out.append((label.strip() or None, Path(rest.strip()).expanduser()))
        else:
            out.append((None, Path(part).expanduser()))
    return out


def _settings_entries() -> list[tuple[str | None, Path]]:
    """The settings file's ``data_roots`` as (label or None, path): an entry is a path, or a table
    ``{path = "/srv/brats/cases", label = "Training cases"}``."""
    listed = server_settings().get("data_roots", [])
    if isinstance(listed, (str, dict)):
        listed = [listed]
    out: list[tuple[str | None, Path]] = []
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict):
                path, label = str(item.get("path", "")).strip(), item.get("label")
                if path:
                    out.append((str(label) if label is not None else None, Path(path).expanduser()))
            elif str(item).strip():
                out.append((None, Path(str(item)).expanduser()))
    return out


def configured_roots() -> list[Path]:
    """Every root as configured, in order (demo, start folder, ``$BRATS_DATA_ROOTS``, settings file), not yet
    resolved; may include folders that do not exist."""
    out: list[Path] = [config.DEMO_DATA_DIR]
    start = os.environ.get(config.DATA_DIR_ENV, "").strip()
    if start:
        out.append(Path(start).expanduser())
    out.extend(p for _, p in _env_entries())
    out.extend(p for _, p in _settings_entries())
    return out


def clean_label(text: object) -> str | None:
    """An administrator's label made safe to show and to use as a picker key: printable, no ``/`` (it separates
    a root's label from a sub-folder), at most ``MAX_LABEL_CHARS`` characters; None when nothing is left."""
    raw = unicodedata.normalize("NFKC", str(text))
    cleaned = "".join(ch for ch in raw if ch.isprintable()).replace("/", "-").replace("\\", "-").strip()
    return cleaned[:MAX_LABEL_CHARS] or None


def root_labels() -> dict[Path, str]:
    """Real path of a root -> the label its administrator chose (``$BRATS_DATA_ROOTS`` ``Label=/path`` entries,
    the settings file's ``data_roots`` tables and its ``[root_labels]`` table ``"/srv/brats" = "Label"``,
    ``$BRATS_DATA_DIR_LABEL`` for the start folder)."""
    pairs: list[tuple[object, str | os.PathLike[str]]] = [(lb, p) for lb, p in (*_env_entries(), *_settings_entries())
                                                           if lb]
    table = server_settings().get("root_labels", {})
    if isinstance(table, dict):
        pairs.extend((lb, Path(str(p)).expanduser()) for p, lb in table.items())
    start = os.environ.get(config.DATA_DIR_ENV, "").strip()
    start_label = os.environ.get(DATA_DIR_LABEL_ENV, "").strip()
    if start and start_label:
        pairs.append((start_label, Path(start).expanduser()))
    out: dict[Path, str] = {}
    for label, path in pairs:
        text = clean_label(label)
        if text and Path(path).is_absolute():
            out.setdefault(Path(os.path.realpath(path)), text)
    return out


def data_roots(roots: Sequence[str | os.PathLike[str]] | None = None) -> tuple[Path, ...]:
    """The allowed roots as real paths, without duplicates; roots that do not exist (or are not folders, or
    are relative) are left out.

    Args:
        roots: explicit roots (tests, tools); default ``configured_roots()``.
    """
    found: list[Path] = []
    for raw in configured_roots() if roots is None else [Path(r) for r in roots]:
        if not Path(raw).is_absolute():
            continue
        real = Path(os.path.realpath(raw))
        if real.is_dir() and real not in found:
            found.append(real)
    return tuple(found)


def _check_text(text: str, what: str) -> str:
    """Refuse text that could smuggle a path past the containment check (before touching the disk)."""
    shown = text[:80] + ("..." if len(text) > 80 else "")
    if not text.strip():
        raise DataFolderError(f"expected a {what}, got an empty path")
    if len(text) > _MAX_PATH_CHARS:
        raise DataFolderError(f"expected a {what} of at most {_MAX_PATH_CHARS} characters, got {len(text)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise DataFolderError(f"expected a {what} without NUL or control characters, got {shown!r}")
    if _ENCODED.search(text):
        raise DataFolderError(f"expected a plain {what}, got a percent-encoded one: {shown!r}")
    if "\\" in text:
        raise DataFolderError(f"expected a {what} with '/' separators, got a backslash in {shown!r}")
    if unicodedata.normalize("NFKC", text) != text:
        raise DataFolderError(f"expected a {what} in plain (NFKC) characters, got {shown!r}")
    return text


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_folder(user_path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]] | None = None,
                   must_exist: bool = True) -> Path:
    """The real path of a user-chosen folder when it lies inside an allowed root.

    Args:
        user_path: an absolute path (what the picker or a page holds); relative paths are refused.
        roots: explicit roots; default the configured ones (``data_roots()``).
        must_exist: also require an existing folder.

    Returns:
        The resolved path (symlinks followed, ``..`` collapsed), inside one of the roots' real paths.

    Raises:
        DataFolderError: not text, encoded or control characters, relative, outside every root (a symlink or
            ``..`` leading out included), no root configured, or (``must_exist``) not an existing folder.
    """
    if not isinstance(user_path, (str, os.PathLike)):
        raise DataFolderError(f"expected a folder path, got {type(user_path).__name__}")
    raw = os.fspath(user_path)
    if not isinstance(raw, str):
        raise DataFolderError("expected a folder path as text, got bytes")
    text = _check_text(raw, "folder path")
    path = Path(text)  # no "~" expansion: a path is absolute or refused
    if not path.is_absolute():
        raise DataFolderError(f"expected an absolute folder path inside the data roots, got {text!r}")
    allowed = data_roots(roots)
    if not allowed:
        raise DataFolderError("expected at least one existing data root, got none (check BRATS_DATA_ROOTS)")
    real = Path(os.path.realpath(path))
    if not any(_inside(real, r) for r in allowed):
        raise DataFolderError(f"expected a folder inside the allowed data roots, got {text!r}")
    if must_exist and not real.is_dir():
        raise DataFolderError(f"expected an existing folder, got {text!r}")
    return real


def resolve_under(root: str | os.PathLike[str], name: str) -> Path:
    """``root/name`` for a new output (``name`` is a relative path of plain parts), refusing anything whose
    real path would leave ``root`` (absolute names, ``..``, symlinks out, encoded variants).

    Raises:
        DataFolderError: as above, or ``root`` does not exist.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataFolderError(f"expected an existing output root, got {str(base)!r}")
    if not isinstance(name, str):
        raise DataFolderError(f"expected an output name, got {type(name).__name__}")
    _check_text(name, "output name")
    rel = Path(name)
    if rel.is_absolute() or any(part in {"..", "."} for part in rel.parts):
        raise DataFolderError(f"expected a name inside the output folder, got {name!r}")
    real_root = Path(os.path.realpath(base))
    real = Path(os.path.realpath(real_root / rel))
    if not _inside(real, real_root) or real == real_root:
        raise DataFolderError(f"expected a name inside the output folder, got {name!r}")
    return real


def model_roots() -> tuple[Path, ...]:
    """Folders whose sub-folders a session may use as its model: ``models/``, the folder of the administrator's
    ``$BRATS_MODEL``, ``$BRATS_MODEL_ROOTS`` (``os.pathsep``-separated) and the settings file's ``model_roots``;
    real paths of existing folders only."""
    raw: list[Path] = [config.MODELS_DIR, config.active_model_dir().parent]
    raw += [Path(p.strip()) for p in os.environ.get(MODEL_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    listed = server_settings().get("model_roots", [])
    raw += [Path(str(p)) for p in ([listed] if isinstance(listed, str) else listed if isinstance(listed, list) else [])]
    return data_roots(roots=raw)


def resolve_model_folder(user_path: str | os.PathLike[str]) -> Path:
    """The real path of a model folder when it lies inside a model root (it need not exist yet: a missing
    model is reported by the loader).

    Raises:
        DataFolderError: encoded or relative text, or a folder outside every model root.
    """
    return resolve_folder(user_path, roots=model_roots(), must_exist=False)


def picker_folders(roots: Sequence[str | os.PathLike[str]] | None = None) -> dict[str, Path]:
    """The folders a web user may pick, by label: each root, then its sub-folders that hold folders
    themselves (collections such as ``brats/train``, not single case folders), two levels deep.

    Labels (shown to web users, so never a server path): the label the administrator chose for a root
    (``root_labels``), else ``demo`` for the bundled demo and the root folder's own name otherwise (two roots of
    one name: ``name (in parent)``), and ``<root label>/<relative path>`` for sub-folders. Hidden folders and links leading out of
    their root are left out; at most ``MAX_PICKER_FOLDERS`` entries. The scan is reused for
    ``PICKER_CACHE_S`` seconds for the same roots (paths are checked again by ``resolve_folder`` on use).
    """
    allowed = data_roots(roots)
    demo = Path(os.path.realpath(config.DEMO_DATA_DIR))
    start_raw = os.environ.get(config.DATA_DIR_ENV, "").strip()
    start = Path(os.path.realpath(Path(start_raw).expanduser())) if start_raw else None
    chosen = root_labels()
    key = (allowed, start, tuple(sorted((str(p), lb) for p, lb in chosen.items())))
    now = time.monotonic()
    hit = _picker_cache.get(key)
    if hit is not None and now - hit[0] < PICKER_CACHE_S:
        return dict(hit[1])
    result = _picker_folders(allowed, demo, start, chosen)
    if len(_picker_cache) > 32:
        _picker_cache.clear()
    _picker_cache[key] = (now, result)
    return dict(result)


def _picker_folders(allowed: tuple[Path, ...], demo: Path, start: Path | None,
                    chosen: dict[Path, str] | None = None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    labels: list[tuple[str, Path]] = []
    chosen = chosen or {}
    for root in allowed:
        label = chosen.get(root) or ("demo" if root == demo else clean_label(root.name) or "root")
        if label in {lb for lb, _ in labels}:  # two roots of one name: say which parent each lies in
            label = f"{label} (in {clean_label(root.parent.name) or 'root'})"
        base, n = label, 2
        while label in {lb for lb, _ in labels}:
            label, n = f"{base} {n}", n + 1
        labels.append((label, root))
        out[label] = root
    for label, root in labels:
        for sub in _collections(root, depth=2):
            if len(out) >= MAX_PICKER_FOLDERS:
                return out
            rel = sub.relative_to(root).as_posix()
            out.setdefault(f"{label}/{rel}", sub)
    return out


def _collections(root: Path, depth: int) -> list[Path]:
    """Sub-folders of ``root`` (down to ``depth`` levels) that contain at least one visible folder."""
    found: list[Path] = []
    frontier = [root]
    for _ in range(depth):
        nxt: list[Path] = []
        for folder in frontier:
            for child in _subdirs(folder):
                real = Path(os.path.realpath(child))
                if not _inside(real, root) or real == root:
                    continue
                if _subdirs(child):
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return sorted(found)


def subfolders(folder: str | os.PathLike[str], depth: int = 3, limit: int = MAX_PICKER_FOLDERS) -> list[str]:
    """Relative paths (posix) of the visible folders inside an allowed ``folder``, ``depth`` levels down, for a
    second picker (a study or DICOM folder inside a root): links leading out of ``folder`` are left out.

    Raises:
        DataFolderError: ``folder`` is not inside an allowed root.
    """
    base = resolve_folder(folder)
    found: list[str] = []
    frontier = [base]
    for _ in range(depth):
        nxt: list[Path] = []
        for parent in frontier:
            for child in _subdirs(parent):
                real = Path(os.path.realpath(child))
                if not _inside(real, base) or real == base:
                    continue
                found.append(child.relative_to(base).as_posix())
                nxt.append(child)
                if len(found) >= limit:
                    return sorted(found)
        frontier = nxt
    return sorted(found)


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return []


def folder_label(folder: str | os.PathLike[str], options: dict[str, Path] | None = None) -> str | None:
    """The picker label of a folder (by real path), or None when it is not one of the picker's folders."""
    real = Path(os.path.realpath(folder))
    for label, path in (picker_folders() if options is None else options).items():
        if path == real:
            return label
    return None


def display_name(folder: str | os.PathLike[str], options: dict[str, Path] | None = None) -> str:
    """What a web user is shown for a folder: its picker label (the administrator's label, ``demo``, a root's
    name, ``<root>/<sub>``), else its own name (a folder inside a root, given relative to the nearest picker
    folder when there is one); never a server path."""
    options = picker_folders() if options is None else options
    label = folder_label(folder, options)
    if label is not None:
        return label
    real = Path(os.path.realpath(folder))
    best: tuple[int, str] | None = None
    for lb, path in options.items():
        if _inside(real, path):
            rel = real.relative_to(path).as_posix()
            if best is None or len(rel) < best[0]:
                best = (len(rel), f"{lb}/{rel}")
    return best[1] if best else (clean_label(real.name) or "folder")


def redact_paths(text: str) -> str:
    """``text`` (an error message) with the server path of every data root, and of the project, replaced by
    the root's label (``<label>``): messages shown to web users never carry a server path."""
    options = picker_folders()
    pairs: list[tuple[str, str]] = []
    for label, path in options.items():
        if "/" in label:
            continue
        pairs.append((str(path), f"<{label}>"))
    for raw in configured_roots():
        real = Path(os.path.realpath(raw))
        root_label = next((lb for lb, p in options.items() if p == real), None)
        if root_label is not None and str(raw) != str(real):
            pairs.append((str(raw), f"<{root_label}>"))
    pairs.append((str(config.PROJECT_ROOT), "<app>"))
    for path_text, tag in sorted(pairs, key=lambda p: -len(p[0])):  # longest first: a root inside another
        if len(path_text) > 1:
            text = text.replace(path_text, tag)
    return text
