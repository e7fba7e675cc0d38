"""`appliance run` starts the dashboard beside the pipeline, or not, as configured."""
from __future__ import annotations

import re
import subprocess
import sys


def _run(*args: str, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "run", "--fast", "--max-frames", "20",
                           "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=300)


def test_run_serves_the_dashboard_locally_without_a_password(data_dir):
    r = _run(data_dir=data_dir)  # the data_dir fixture sets APPLIANCE_WEB_PORT=0: a free port
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if "dashboard at" in x)
    assert re.search(r"dashboard at http://127\.0\.0\.1:\d+/: no password set", line), line
    assert "listens on 127.0.0.1 only" in line


def test_web_disabled_serves_nothing(data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web: {enabled: false}\n")
    r = _run("--config", str(cfg), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "dashboard" not in r.stderr


def test_bad_web_port_is_refused(data_dir):
    r = _run("--web-port", "http", data_dir=data_dir)
    assert r.returncode == 2 and "--web-port: expected a TCP port 0-65535, got 'http'" in r.stderr
