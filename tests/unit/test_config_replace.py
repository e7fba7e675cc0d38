"""Replacing a config: atomic, the previous kept as .bak with its mode, clear failures."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from appliance.config.replace import replace_config, write_hint
from appliance.errors import ApplianceError


def test_first_write_then_replace_keeps_a_backup(tmp_path):
    path = tmp_path / "etc/config.yaml"
    assert replace_config(path, "device: {id: a}\n") is None
    assert path.read_text() == "device: {id: a}\n" and oct(path.stat().st_mode & 0o777) == "0o640"
    os.chmod(path, 0o600)
    backup = replace_config(path, "device: {id: b}\n")
    assert backup == tmp_path / "etc/config.yaml.bak" and backup.read_text() == "device: {id: a}\n"
    assert path.read_text() == "device: {id: b}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600" == oct(backup.stat().st_mode & 0o777)
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml", "config.yaml.bak"]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    blocker = tmp_path / "etc"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(ApplianceError, match=r"cannot write .*config.yaml: .*the previous config is unchanged"):
        replace_config(blocker / "config.yaml", "x: 1\n")
    assert blocker.read_text() == "a file where the directory should be"


def test_hints():
    p = Path("/etc/appliance/config.yaml")
    assert "is full" in write_hint(OSError(errno.ENOSPC, "No space left on device"), p)
    assert "read-only" in write_hint(OSError(errno.EROFS, "Read-only file system"), p)
    assert "sudo" in write_hint(OSError(errno.EACCES, "Permission denied"), p)
