"""Live cameras against a real RTSP server (GstRtspServer, tests/rtsp_server.py) on loopback.

The server is killed and restarted, or frozen with SIGSTOP (its TCP connection stays
open and silent, the case where a read would hang), while the appliance keeps running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from appliance import config
from appliance.capture.readers import opencv_has_gstreamer
from appliance.pipeline import Pipeline
from tests.integration.test_pipeline import _one_line_error, appliance, assert_lifecycles_complete
from tests.rtsp_server import start_rtsp_server, stop_rtsp_server

STALL_S = 2.0
# Deadlines only guard against hangs: far longer than any transition should take, however
# busy the machine. How long the transitions took is printed, never asserted; the timing
# rules themselves are tested with a fake clock in tests/unit/test_capture_supervisor.py.
DEADLINE_S = 60.0


class Server:
    """One RTSP server on a fixed port that the test can kill, freeze and restart."""

    def __init__(self, protocols: str = "all"):
        self.protocols = protocols
        self.proc, self.port = start_rtsp_server(protocols=protocols)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def kill(self) -> None:
        stop_rtsp_server(self.proc)

    def restart(self) -> None:
        self.proc, _ = start_rtsp_server(port=self.port, protocols=self.protocols)

    def freeze(self, frozen: bool) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


@pytest.fixture
def rtsp():
    server = Server()
    yield server
    if server.proc.poll() is None:
        server.freeze(False)  # resume a frozen server before killing it
    stop_rtsp_server(server.proc)


def wait_for(predicate, timeout: float = DEADLINE_S, step: float = 0.05):
    """Seconds until predicate() is true (to print, not to assert); fails after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"not true after {timeout} s")


def test_appliance_survives_rtsp_server_kill_and_restart(rtsp, data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
web: {{enabled: false}}
log: {{stats_interval_s: 0.5}}
cameras:
  - {{id: gate, source: '{rtsp.url}', stall_timeout_s: {STALL_S}}}  # default backoff: 0.5 s doubling to 2 s
  - {{id: demo, source: asset:vtest.avi, loop: true}}
""")
    log_file = (tmp_path / "appliance.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(cfg),
                             "--data-dir", str(data_dir)], stdout=log_file, stderr=subprocess.STDOUT)
    status_file = data_dir / "status.json"

    def cams() -> dict:
        try:
            return json.loads(status_file.read_text())["cameras"]
        except (OSError, ValueError, KeyError):
            return {}

    try:
        wait_for(lambda: cams().get("gate", {}).get("frames", 0) > 20)
        assert cams()["gate"]["state"] == "streaming"

        rtsp.kill()
        changed_after = wait_for(lambda: cams()["gate"]["state"] != "streaming")
        demo_before = cams()["demo"]["frames"]
        # The server stays down: reconnection attempts fail, and the other camera goes on.
        wait_for(lambda: cams()["gate"]["state"] == "failed")
        assert "cannot open" in cams()["gate"]["state_reason"]
        wait_for(lambda: cams()["demo"]["frames"] > demo_before + 15)
        down = cams()
        assert down["gate"]["state"] == "failed"  # still down while the demo camera went on
        assert proc.poll() is None

        gate_frames = down["gate"]["frames"]
        rtsp.restart()
        recovered_after = wait_for(lambda: cams()["gate"]["state"] == "streaming"
                                   and cams()["gate"]["frames"] > gate_frames + 5)
        assert cams()["gate"]["reconnects"] == 1
        text = subprocess.run([sys.executable, "-m", "appliance", "status", "--data-dir", str(data_dir)],
                              capture_output=True, text=True).stdout
        assert "camera gate: streaming (frames from rtsp://127.0.0.1" in text
        print(f"\nRTSP kill: state changed after {changed_after:.2f} s (stall timeout {STALL_S} s); "
              f"restart: frames again after {recovered_after:.2f} s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log_file.close()
    log = (tmp_path / "appliance.log").read_text()
    assert proc.returncode == 0, log
    assert "camera gate: streaming -> stalled" in log and "camera gate: failed -> streaming" in log

    events = [json.loads(line) for line in subprocess.run(
        [sys.executable, "-m", "appliance", "events", "--json", "--limit", "100000", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True).stdout.splitlines()]
    states = [(e["previous"], e["state"]) for e in events if e["type"] == "camera" and e["camera"] == "gate"]
    assert states == [("connecting", "streaming"), ("streaming", "stalled"), ("stalled", "failed"),
                      ("failed", "streaming")]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert len({e["id"] for e in events}) == len(events)
    assert_lifecycles_complete([e for e in events if e["type"] in ("new", "update", "end")])
    text = subprocess.run([sys.executable, "-m", "appliance", "events", "--limit", "100000",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, check=True).stdout
    assert "camera   streaming -> stalled:" in text


def _pipeline(data_dir: Path, cameras: str) -> Pipeline:
    cfg = config.from_dict(__import__("yaml").safe_load(cameras))
    return Pipeline(cfg, data_dir)


def _cam(p: Pipeline, cam: str) -> dict:
    """What the pipeline reports for one camera (state, state_reason, frames, attempts, ...)."""
    return p.status()["cameras"][cam]


def test_frozen_server_is_caught_by_the_stall_timeout(rtsp, data_dir):
    p = _pipeline(data_dir, f"cameras: [{{id: gate, source: '{rtsp.url}', stall_timeout_s: {STALL_S}, "
                            "backoff_max_s: 1.0, open_timeout_s: 3}]")
    p.start()
    try:
        wait_for(lambda: _cam(p, "gate")["state"] == "streaming")
        rtsp.freeze(True)  # TCP stays open, nothing arrives: a read would wait forever
        stalled_after = wait_for(lambda: _cam(p, "gate")["state"] != "streaming")
        assert _cam(p, "gate")["state"] == "stalled"
        wait_for(lambda: REGISTRY.get_sample_value("appliance_camera_state",  # set just after the state
                                                   {"camera": "gate", "state": "stalled"}) == 1)
        assert REGISTRY.get_sample_value("appliance_camera_state", {"camera": "gate", "state": "streaming"}) == 0
        time.sleep(1.0)
        rtsp.freeze(False)
        frames = _cam(p, "gate")["frames"]
        thawed_after = wait_for(lambda: _cam(p, "gate")["state"] == "streaming"
                                and _cam(p, "gate")["frames"] > frames)
        print(f"\nRTSP freeze: stalled after {stalled_after:.2f} s (stall timeout {STALL_S:g} s); "
              f"thawed: frames again after {thawed_after:.2f} s")
        st = _cam(p, "gate")
        assert st["state"] == "streaming" and st["reconnects"] >= 1 and st["last_frame_age_s"] is not None
    finally:
        p.stop()
        p.join()
    assert p.running is False


def test_rtsp_transport_is_chosen_per_camera(data_dir):
    # Cameras that each allow one transport only: a camera gets its own FFmpeg options.
    tcp_only, udp_only = Server(protocols="tcp"), Server(protocols="udp")
    try:
        p = _pipeline(data_dir, f"""
cameras:
  - {{id: tcp, source: '{tcp_only.url}', rtsp_transport: tcp}}
  - {{id: udp, source: '{udp_only.url}', rtsp_transport: udp}}
  - {{id: wrong, source: '{tcp_only.url}', rtsp_transport: udp, backoff_max_s: 0.5}}
""")
        p.start()
        try:
            wait_for(lambda: _cam(p, "tcp")["frames"] > 10 and _cam(p, "udp")["frames"] > 10)
            wait_for(lambda: _cam(p, "wrong")["state"] == "failed")
            wait_for(lambda: _cam(p, "tcp")["state"] == _cam(p, "udp")["state"] == "streaming")
            assert "over UDP" in _cam(p, "wrong")["state_reason"]
            # Still trying (the appliance runs on): a second attempt follows.
            wait_for(lambda: _cam(p, "wrong")["attempts"] >= 2)
        finally:
            p.stop()
            p.join()
    finally:
        stop_rtsp_server(tcp_only.proc)
        stop_rtsp_server(udp_only.proc)


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: csi:// would try to run")
def test_missing_backend_is_a_one_line_startup_error(data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web: {enabled: false}\ncameras:\n  - {id: front, source: 'csi://0'}\n")
    _one_line_error(appliance("run", "--config", str(cfg), data_dir=data_dir),
                    "camera front: csi source needs OpenCV built with GStreamer")
