"""Replacing a config file safely: validated first, written atomically, the previous one kept.

Used by `appliance provision` and by the safe-mode editor (web/safemode.py). The new text
goes to a temporary file in the same directory, is flushed to disk, and only then renamed
over the config (rename is atomic on one file system), so a power cut leaves either the
old file or the new one, never half of each. The previous file is kept as
`<name>.bak` (for example config.yaml.bak) the same way. A failure to write (disk full,
read-only file system, no permission) raises ApplianceError with what to do about it
and leaves the previous config untouched.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from appliance.errors import ApplianceError

NEW_FILE_MODE = 0o640  # holds the password hash and maybe the broker password


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def write_hint(e: OSError, path: Path) -> str:
    """What to do about an OSError while writing `path`."""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return f"the disk holding {path.parent} is full: free some space (df -h {path.parent}) and try again"
    if e.errno == errno.EROFS:
        return (f"{path.parent} is on a read-only file system: remount it read-write (or, under "
                "systemd, allow the service to write it: ReadWritePaths=) and try again")
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {path.parent}: run it as root (sudo) or as the owner of the directory"
    return "check the disk and the directory, then try again"


def _write_atomic(path: Path, data: bytes, mode: int, like: Path | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if like is not None and like.exists():
            st = like.stat()
            os.chmod(tmp, st.st_mode & 0o7777)
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # not root: the file stays ours, which it already was to be writable
        else:
            os.chmod(tmp, mode)
            if os.geteuid() == 0:  # the service reads it through the folder's group (root:appliance)
                os.chown(tmp, 0, path.parent.stat().st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the directory is flushed
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def replace_config(path: Path, text: str) -> Path | None:
    """Write `text` (already validated by the caller) to `path`, keeping the previous file
    as <name>.bak; returns the backup's path, or None when there was no previous file."""
    path = Path(path)
    backup = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            backup = backup_path(path)
            _write_atomic(backup, path.read_bytes(), NEW_FILE_MODE, like=path)
        _write_atomic(path, text.encode("utf-8"), NEW_FILE_MODE, like=path)
    except OSError as e:
        raise ApplianceError(f"cannot write {path}: {e.strerror or e}; the previous config is unchanged. "
                             f"Fix: {write_hint(e, path)}") from None
    return backup
