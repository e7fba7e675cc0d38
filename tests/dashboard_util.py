"""A real `appliance run` with its dashboard, for the browser tests, and what they share:
the password, Debian's Chromium and where screenshots go."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # git-ignored, for a person to look at
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, as root, with no network: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def appliance_env(assets_dir: Path) -> dict[str, str]:
    """The environment of an appliance under test: the checkout's assets, a free web port."""
    return {**os.environ, "APPLIANCE_ASSETS_DIR": str(assets_dir), "APPLIANCE_WEB_PORT": "0"}


def set_password(cfg: Path, env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "appliance", "passwd", "--config", str(cfg), "--password-stdin"],
                       input=PASSWORD + "\n", capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr


@contextlib.contextmanager
def running_dashboard(cfg: Path, data: Path, env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """`appliance run --config cfg --data-dir data`, until its dashboard answers: (its URL,
    the log lines so far and to come). Stopped with SIGTERM (SIGKILL after 30 s) on exit."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(cfg), "--data-dir", str(data)],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:  # keep draining stderr so the appliance never blocks on a full pipe
        for line in proc.stderr:
            lines.append(line)
            if "dashboard at http://" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert found.wait(90), "no 'dashboard at' line:\n" + "".join(lines)
        yield re.search(r"dashboard at (http://\S+/)", "".join(lines)).group(1), lines
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
