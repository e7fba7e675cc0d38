"""sd_notify against a real NOTIFY_SOCKET: a real `appliance run` subprocess sends READY=1,
STATUS=..., periodic WATCHDOG=1 and, on SIGTERM, STOPPING=1 (path and abstract sockets); an
in-process pipeline whose detector hangs stops the pings and resumes them once it is
released; and the unit files pass `systemd-analyze verify`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from appliance import config
from appliance.control.systemd import SystemdNotifier
from appliance.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[2]


class NotifySocket:
    """A datagram socket like systemd's, recording (monotonic time, message) as they come."""

    def __init__(self, abstract: bool):
        self._dir = tempfile.mkdtemp(dir="/tmp", prefix="notify-")  # short: sun_path is 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"appliance-test/{os.getpid()}/{Path(self._dir).name}"
            self.sock.bind(b"\0" + name.encode())
            self.env_value = "@" + name
        else:
            self.env_value = str(Path(self._dir) / "notify")
            self.sock.bind(self.env_value)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.extend((time.monotonic(), m) for m in data.decode().split("\n"))

    def times(self, message: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if m == message]

    def has_prefix(self, prefix: str) -> bool:
        with self._lock:
            return any(m.startswith(prefix) for _, m in self.messages)

    def wait_for(self, cond, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s; got {self.messages[-10:]}"
            time.sleep(0.05)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(params=[False, True], ids=["path", "abstract"])
def notify_socket(request):
    s = NotifySocket(abstract=request.param)
    yield s
    s.close()


def test_appliance_run_notifies_systemd(data_dir, notify_socket):
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "1000000",
           "APPLIANCE_WEB_PORT": "0"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--loop", "--data-dir", str(data_dir)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        s = notify_socket
        s.wait_for(lambda: s.times("READY=1"), 180, "READY=1")
        s.wait_for(lambda: s.has_prefix("STATUS=camera="), 30, "STATUS=<status line>")
        ready = s.times("READY=1")[0]
        s.wait_for(lambda: len([t for t in s.times("WATCHDOG=1") if t > ready]) >= 4, 30, "4 WATCHDOG=1")
        assert not s.times("STOPPING=1")
        proc.send_signal(signal.SIGTERM)
        s.wait_for(lambda: s.times("STOPPING=1"), 30, "STOPPING=1")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert len(s.times("READY=1")) == 1 and len(s.times("STOPPING=1")) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


class Hangable:
    """The real detector, except that detect() blocks while `go` is clear."""

    def __init__(self, detector):
        self._detector = detector
        self.go = threading.Event()
        self.go.set()

    def detect(self, images):
        self.go.wait()
        return self._detector.detect(images)

    def __getattr__(self, name):
        return getattr(self._detector, name)


def test_watchdog_pings_stop_while_the_detector_hangs(data_dir):
    s = NotifySocket(abstract=False)
    cfg = config.from_dict({"web": {"enabled": False, "stale_after_s": 1.0}, "log": {"stats_interval_s": 1.0}})
    for cam in cfg.cameras:
        cam.loop = True
    p = Pipeline(cfg, data_dir)
    hang = Hangable(p.detect.detector)
    p.detect.detector = hang
    notifier = SystemdNotifier(p, env={"NOTIFY_SOCKET": s.env_value, "WATCHDOG_USEC": "1000000"})
    p.services.append(notifier)
    runner = threading.Thread(target=p.run, daemon=True)
    runner.start()
    try:
        s.wait_for(lambda: s.times("READY=1"), 60, "READY=1")
        s.wait_for(lambda: len(s.times("WATCHDOG=1")) >= 3, 30, "3 WATCHDOG=1")
        hang.go.clear()
        hung_at = time.monotonic()
        # The pings stop once no frame left the tracker for the window (1 s) while frames
        # keep arriving: wait for a silence longer than 3 watchdog intervals.
        def silent_for(seconds: float) -> bool:
            last = max(s.times("WATCHDOG=1"))
            return time.monotonic() - last > seconds

        s.wait_for(lambda: silent_for(3.5), 60, "a silence of 3.5 s in the pings")
        assert "stuck" in notifier.health.reason and notifier.withheld >= 3
        assert p.running and not s.times("STOPPING=1")
        hang.go.set()
        released = time.monotonic()
        s.wait_for(lambda: [t for t in s.times("WATCHDOG=1") if t > released], 30, "pings after the release")
        assert hung_at < released
    finally:
        hang.go.set()
        p.stop()
        runner.join(60)
        s.wait_for(lambda: s.times("STOPPING=1"), 10, "STOPPING=1")
        s.close()
    assert not runner.is_alive()


BROKEN_CAPTURE = """
import sys
from appliance.capture import supervisor

def broken(self, stop):
    raise RuntimeError("a bug in the capture loop")

supervisor.CameraSupervisor.run = broken
from appliance.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_live_camera_whose_capture_thread_fails_exits_non_zero(data_dir, tmp_path, notify_socket):
    """The capture loop raises (a bug): the pipeline drains and `appliance run` exits 1, not 0,
    so that Restart=on-failure starts it again instead of leaving the device idle."""
    with socket.socket() as s:  # a port for the camera's URL (its supervisor never opens it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"device: {{id: dev1}}\ncameras: [{{id: gate, source: 'rtsp://127.0.0.1:{port}/s'}}]\n"
                   "web: {enabled: false}\n")
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    r = subprocess.run([sys.executable, "-c", BROKEN_CAPTURE, "run", "--config", str(cfg), "--data-dir",
                        str(data_dir)], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "capture-gate: stage failed" in r.stderr and "RuntimeError: a bug in the capture loop" in r.stderr
    assert "the pipeline ended with no stop asked for (capture thread failed: capture-gate)" in r.stderr
    notify_socket.wait_for(lambda: notify_socket.times("STOPPING=1"), 10, "STOPPING=1")


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _verify(unit_dir: Path) -> subprocess.CompletedProcess:
    units = sorted(str(u) for u in unit_dir.glob("*.service"))
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})


def _units_with_existing_binaries(dest: Path, text_edit=None) -> Path:
    """Copies of systemd/*.service whose Exec* paths point at binaries that exist here
    (/opt/appliance/venv/bin/appliance and the helpers are installed only on a device)."""
    dest.mkdir()
    true = shutil.which("true")
    for unit in (REPO / "systemd").glob("*.service"):
        text = unit.read_text()
        for exe in ("/opt/appliance/venv/bin/appliance", "/usr/local/lib/appliance/appliance-power-apply",
                    "/usr/local/lib/appliance/appliance-power-setup"):
            text = text.replace(exe, true)
        if text_edit:
            text = text_edit(text)
        (dest / unit.name).write_text(text)
    return dest


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    assert sorted(u.name for u in (REPO / "systemd").glob("*.service")) == [
        "appliance-power@.service", "appliance.service"]
    r = _verify(_units_with_existing_binaries(tmp_path / "ok"))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr  # not even a warning
    # The check is real: verify exits 0 on an unknown key but says so, and that fails it.
    r = _verify(_units_with_existing_binaries(tmp_path / "typo", lambda t: t.replace("WatchdogSec=", "WatchDogSec=")))
    assert r.returncode != 0 or "WatchDogSec" in r.stderr, r.stderr
    r = _verify(_units_with_existing_binaries(tmp_path / "value", lambda t: t.replace("Type=notify", "Type=notfy")))
    assert r.returncode != 0 or "notfy" in r.stderr, r.stderr


def _directives(unit: Path) -> dict[str, list[str]]:
    """"Section.Key" -> every value it is given (a key may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def test_the_appliance_unit_is_a_watched_unprivileged_sandboxed_service():
    d = _directives(REPO / "systemd/appliance.service")
    one = {k: v[-1] for k, v in d.items()}
    assert one["Service.Type"] == "notify" and int(one["Service.WatchdogSec"]) > 0
    assert one["Service.Restart"] == "on-failure"
    assert int(one["Unit.StartLimitBurst"]) > 0 and int(one["Unit.StartLimitIntervalSec"]) > 0
    assert one["Service.User"] == "appliance" and one["Service.Group"] == "appliance"
    assert one["Service.StateDirectory"] == "appliance" and one["Service.ConfigurationDirectory"] == "appliance"
    assert set(one["Service.SupplementaryGroups"].split()) == {"video", "render", "i2c"}
    assert (one["Service.ProtectSystem"], one["Service.ProtectHome"], one["Service.PrivateTmp"],
            one["Service.NoNewPrivileges"]) == ("strict", "yes", "yes", "yes")
    assert one["Service.CapabilityBoundingSet"] == "" and one["Service.AmbientCapabilities"] == ""
    assert "/opt/appliance/venv/bin/appliance run --config /etc/appliance/config.yaml" in one["Service.ExecStart"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_appliance_units_sandbox_rates_ok_in_systemd_analyze_security(tmp_path):
    """systemd's own rating of the sandbox (0 is locked down, 10 is none): "OK" is up to 3.9
    (--threshold is ten times that). Dropping the hardening makes it fail, so the check bites."""
    def security(unit_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=39", "--no-pager",
                               str(unit_dir / "appliance.service")], capture_output=True, text=True, timeout=120)

    r = security(_units_with_existing_binaries(tmp_path / "ok"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "Overall exposure level for appliance.service: 3." in r.stdout and " OK" in r.stdout.splitlines()[-1]
    loose = ("ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "PrivateTmp=yes")

    def unharden(text: str) -> str:
        for line in loose:
            text = text.replace(line, "#" + line)
        return text

    r = security(_units_with_existing_binaries(tmp_path / "loose", unharden))
    assert r.returncode != 0, r.stdout[-1000:]
