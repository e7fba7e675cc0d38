"""A real, small file system for tests that need a real ENOSPC ("database or disk is full").

Tried in order: a tmpfs of the size asked (`mount -t tmpfs -o size=...`), then an ext4
image on a loop device. Both need root with the right to mount (a sandbox or container
running as root usually has it). When neither works the test is skipped, with the reason.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=60)


def _mount_tmpfs(mnt: Path, size: int) -> str | None:
    r = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt))
    return None if r.returncode == 0 else f"tmpfs: {(r.stderr or r.stdout).strip()}"


def _mount_loop(mnt: Path, image: Path, size: int) -> str | None:
    if not shutil.which("mkfs.ext4"):
        return "loop: no mkfs.ext4"
    with open(image, "wb") as f:
        f.truncate(max(size, 1024 * 1024))  # ext4 needs some room for itself
    r = _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", str(image))
    if r.returncode != 0:
        return f"loop: mkfs.ext4: {r.stderr.strip()}"
    r = _run("mount", "-o", "loop", str(image), str(mnt))
    return None if r.returncode == 0 else f"loop: {(r.stderr or r.stdout).strip()}"


@contextlib.contextmanager
def small_fs(base: Path, size: int = 300 * 1024) -> Iterator[Path]:
    """Mount a file system of about `size` bytes under `base` and yield its root; unmount
    it afterwards. Skips the test when no way to mount one works here."""
    mnt = base / "small-fs"
    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small file system needs root to mount (tmpfs or loop)")
    why = [_mount_tmpfs(mnt, size)]
    if why[-1] is not None:
        why.append(_mount_loop(mnt, base / "small-fs.img", size))
    if why[-1] is not None:
        pytest.skip("cannot mount a small file system for a real ENOSPC: " + "; ".join(why))
    try:
        yield mnt
    finally:
        r = _run("umount", str(mnt))
        if r.returncode != 0:  # a process of the test still holds a file there
            _run("umount", "-l", str(mnt))


def fill(root: Path, leave: int = 0) -> Path:
    """Write a filler file until the file system has no more than `leave` bytes free."""
    path = root / "filler.bin"
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as f:
        while shutil.disk_usage(root).free > leave:
            try:
                f.write(chunk)
            except OSError:
                break
    return path
