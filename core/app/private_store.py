"""Private storage of one browser session: the on-disk corrections of its uploaded cases (no Streamlit here).

Each session gets a random token (128 bits, ``secrets.token_hex``) and a folder ``work_dir()/sessions/<token>/``
that no other session can name: the token lives only in the session's server-side state, never in a URL or
a file name shown to users. The folder is removed when the session ends (``ui`` registers ``remove`` as the
release hook of a session-scoped resource) and, as a backstop for sessions that end without a hook (a killed
server), by ``sweep`` once it has been idle longer than the administrator's limit
(``core.data.roots.upload_ttl_minutes``). Activity is the modification time of the folder's ``.last_used``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

from core.config import work_dir
from core.errors import BratsViewerError

SESSIONS_DIR_NAME = "sessions"
LAST_USED_FILE = ".last_used"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def sessions_root() -> Path:
    """``work_dir()/sessions`` (not created here)."""
    return work_dir() / SESSIONS_DIR_NAME


def new_token() -> str:
    """A fresh unguessable session token (32 hex characters)."""
    return secrets.token_hex(16)


def session_dir(token: str, root: str | os.PathLike[str] | None = None, create: bool = False) -> Path:
    """The private folder of a session.

    Raises:
        BratsViewerError: the token is not 32 lower-case hex characters (never a path).
    """
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise BratsViewerError(f"expected a session token of 32 hex characters, got {token!r}")
    folder = (Path(root) if root is not None else sessions_root()) / token
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def touch(token: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Mark the session active now (creates its folder); returns the folder."""
    folder = session_dir(token, root, create=True)
    (folder / LAST_USED_FILE).touch()
    return folder


def remove(token: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Delete a session's folder and everything in it; True when something was removed."""
    folder = session_dir(token, root)
    if not folder.exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def last_used(folder: Path) -> float:
    """When a session folder was last used (epoch seconds): its ``.last_used`` file, else the folder itself."""
    for path in (folder / LAST_USED_FILE, folder):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def sweep(ttl_minutes: float, root: str | os.PathLike[str] | None = None, now: float | None = None) -> list[str]:
    """Remove every session folder idle for longer than ``ttl_minutes``; returns the removed tokens.

    Entries that are not session folders (other names, files, links) are left alone.
    """
    base = Path(root) if root is not None else sessions_root()
    if not base.is_dir():
        return []
    limit_s = float(ttl_minutes) * 60.0
    clock = time.time() if now is None else float(now)
    removed: list[str] = []
    for entry in sorted(base.iterdir()):
        if not _TOKEN.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        if clock - last_used(entry) > limit_s:
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry.name)
    return removed
