"""appliance/control/systemd.py: $NOTIFY_SOCKET addresses, $WATCHDOG_USEC/$WATCHDOG_PID, a real
datagram socket, and the watchdog rule on a fake pipeline with an injected clock."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.control.systemd import Health, Notifier, socket_address, unexpected_end, watchdog_interval_s


def test_socket_address_forms():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify/42") == b"\0/org/freedesktop/systemd1/notify/42"
    assert socket_address(None) is None and socket_address("") is None
    assert socket_address("vsock:2:1234") is None  # not a Unix socket: not ours to handle


def test_watchdog_interval_honours_pid():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, pid=2) == 1.0
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None


def test_notifier_without_socket_is_a_noop():
    n = Notifier({})
    assert not n.enabled and n.notify("READY=1") is False
    n.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_datagrams(abstract):
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        recv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"appliance-test-{os.getpid()}-{threading.get_ident()}"
            recv.bind(b"\0" + name.encode())
            env = {"NOTIFY_SOCKET": "@" + name}
        else:
            path = str(Path(d) / "notify")
            recv.bind(path)
            env = {"NOTIFY_SOCKET": path}
        recv.settimeout(5)
        n = Notifier(env)
        assert n.notify("READY=1", "STATUS=ok")
        assert recv.recv(4096) == b"READY=1\nSTATUS=ok"
        n.close()
        recv.close()


def test_notifier_send_failure_is_not_fatal(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.notify("WATCHDOG=1") is False and n.notify("WATCHDOG=1") is False


class FakeStage:
    def __init__(self, name: str, alive: bool = True):
        self.name, self.alive, self.frames = name, alive, 0
        self.stats = SimpleNamespace(errors=0)  # Stage._main counts a run() that raised here


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fake_pipeline(clock: Clock, cameras: tuple[str, ...] = ("a",), live: tuple[str, ...] = ()):
    caps = {cam: FakeStage(f"capture-{cam}") for cam in cameras}
    detect, track = FakeStage("detect"), FakeStage("track")
    track.heartbeat, track.depth = clock.t, 0
    depths = {cam: 0 for cam in cameras}
    p = SimpleNamespace(captures=caps, detect=detect, track=track, stages=[*caps.values(), detect, track],
                        stop_event=threading.Event(), hub=SimpleNamespace(depth=lambda cam: depths[cam]),
                        live_cameras=set(live))
    return p, depths


def test_frames_flowing_is_healthy_and_a_wedge_is_not():
    clock = Clock()
    p, depths = fake_pipeline(clock)
    h = Health(p, window_s=10.0, clock=clock)
    for _ in range(5):  # frames in, frames out
        clock.t += 1
        p.captures["a"].frames += 10
        p.track.heartbeat = clock.t
        assert h.healthy()
    for _ in range(10):  # the detector hangs: frames keep arriving, none leaves the tracker
        clock.t += 1
        p.captures["a"].frames += 10
        depths["a"] = 1
        assert h.healthy()  # within the window: a slow detection is not yet a wedge
    clock.t += 1.5
    p.captures["a"].frames += 10
    assert not h.healthy() and "stuck" in h.reason
    p.track.heartbeat = clock.t  # it came back
    assert h.healthy()


def test_a_frame_waiting_in_the_hub_counts_as_work_even_without_new_input():
    clock = Clock()
    p, depths = fake_pipeline(clock)
    h = Health(p, window_s=10.0, clock=clock)
    depths["a"] = 1  # a file played fast: its capture blocks on a full slot, so frames stop
    clock.t += 30
    assert not h.healthy()


def test_camera_outage_keeps_pinging():
    clock = Clock()
    p, _ = fake_pipeline(clock)
    h = Health(p, window_s=10.0, clock=clock)
    p.captures["a"].frames = 100
    assert h.healthy()
    for _ in range(60):  # the camera is gone and retried; nothing waits anywhere
        clock.t += 1
        assert h.healthy()
    assert "no input" in h.reason


def test_dead_stage_thread_stops_the_pings_but_draining_does_not():
    clock = Clock()
    p, _ = fake_pipeline(clock)
    h = Health(p, window_s=10.0, clock=clock)
    p.track.alive = False
    assert not h.healthy() and "track" in h.reason
    p.stop_event.set()  # shutting down: stages end on purpose
    assert h.healthy()
    p.stop_event.clear()
    p.captures["a"].alive = False  # the input ended (a file): the pipeline is draining
    assert h.healthy()


def test_a_failed_capture_thread_stops_the_pings_though_another_camera_flows():
    clock = Clock()
    p, _ = fake_pipeline(clock, cameras=("a", "b"))
    h = Health(p, window_s=10.0, clock=clock)
    p.captures["b"].alive = False  # a file that ended: fine while "a" goes on
    clock.t += 1
    p.captures["a"].frames += 10
    p.track.heartbeat = clock.t
    assert h.healthy()
    p.captures["b"].stats.errors = 1  # ... but a capture loop that raised is a dead thread
    assert not h.healthy() and h.reason == "capture thread failed: capture-b"
    p.captures["a"].alive = False  # every capture ended, one of them failed: not a drain either
    assert not h.healthy()
    p.stop_event.set()
    assert h.healthy()


def test_an_end_by_itself_with_a_live_camera_is_unexpected():
    clock = Clock()
    p, _ = fake_pipeline(clock, cameras=("file", "gate"), live=("gate",))
    assert unexpected_end(p) is None  # still running
    p.captures["file"].alive = False
    assert unexpected_end(p) is None  # a file ends by itself
    p.captures["gate"].alive = False
    assert unexpected_end(p) == "live camera capture ended by itself: gate"
    assert unexpected_end(p, max_frames=100) is None  # --max-frames ends live cameras on purpose
    p.captures["file"].stats.errors = 1
    assert unexpected_end(p, max_frames=100) == "capture thread failed: capture-file"
    p.stop_event.set()  # a signal: whatever ended, it was asked to
    assert unexpected_end(p) is None


SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"


def _cpufreq(root: Path, governor: str = "schedutil") -> list[Path]:
    files = []
    for i in (0, 4):
        d = root / f"sys/devices/system/cpu/cpufreq/policy{i}"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(governor + "\n")
        files.append(d / "scaling_governor")
    return files


def _apply(action: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYSTEMD_DIR / "appliance-power-apply"), action], capture_output=True, text=True,
                          env={"APPLIANCE_SYSFS_ROOT": str(root), "PATH": "/nonexistent"}, timeout=30)


@pytest.mark.parametrize("action", ["", "nvpmodel-", "nvpmodel-0;reboot", "nvpmodel-1 2", "governor-userspace",
                                    "governor-../../x", "clocks-unlock", "reboot", "--help"])
def test_power_apply_refuses_anything_off_the_whitelist(tmp_path, action):
    files = _cpufreq(tmp_path)
    r = _apply(action, tmp_path)
    assert r.returncode == 2 and "refused" in r.stderr
    assert all(f.read_text() == "schedutil\n" for f in files)


def test_power_apply_sets_a_governor_on_every_policy(tmp_path):
    files = _cpufreq(tmp_path)
    r = _apply("governor-performance", tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(f.read_text() == "performance\n" for f in files)


def test_power_setup_opens_the_governor_to_the_group(tmp_path):
    import grp

    files = _cpufreq(tmp_path)
    for f in files:
        f.chmod(0o644)
    group = grp.getgrgid(os.getgid()).gr_name
    r = subprocess.run([str(SYSTEMD_DIR / "appliance-power-setup")], capture_output=True, text=True, timeout=30,
                       env={"APPLIANCE_SYSFS_ROOT": str(tmp_path), "APPLIANCE_GROUP": group,
                            "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert r.returncode == 0, r.stderr
    assert all(f.stat().st_mode & 0o020 and f.stat().st_gid == os.getgid() for f in files)


def _fake_bin(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """systemctl, nvpmodel and jetson_clocks that only log their arguments."""
    bin_dir, log_file = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("systemctl", "nvpmodel", "jetson_clocks"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log_file}\n')
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "APPLIANCE_HELPER_PATH": f"{bin_dir}:/usr/bin:/bin"}, log_file


@pytest.mark.parametrize(("script", "args", "call"), [
    ("appliance-nvpmodel", ["-m", "2"], "systemctl start --no-ask-password appliance-power@nvpmodel-2.service"),
    ("appliance-nvpmodel", ["-q"], "nvpmodel -q"),
    ("appliance-nvpmodel", ["-p", "--verbose"], "nvpmodel -p --verbose"),
    ("appliance-jetson-clocks", [], "systemctl start --no-ask-password appliance-power@clocks-lock.service"),
    ("appliance-jetson-clocks", ["--store", "/var/lib/appliance/jetson_clocks.conf"],
     "systemctl start --no-ask-password appliance-power@clocks-store.service"),
    ("appliance-jetson-clocks", ["--restore", "/var/lib/appliance/jetson_clocks.conf"],
     "systemctl start --no-ask-password appliance-power@clocks-restore.service"),
    ("appliance-jetson-clocks", ["--show"], "jetson_clocks --show"),
    ("appliance-power-apply", ["nvpmodel-0"], "nvpmodel -m 0"),
])
def test_power_wrappers_route_changes_through_the_helper_unit(tmp_path, script, args, call):
    env, log_file = _fake_bin(tmp_path)
    r = subprocess.run([str(SYSTEMD_DIR / script), *args], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert log_file.read_text().splitlines() == [call]


@pytest.mark.parametrize(("script", "args"), [
    ("appliance-nvpmodel", ["-m", "2;reboot"]),
    ("appliance-jetson-clocks", ["--store", "/tmp/elsewhere"]),
    ("appliance-jetson-clocks", ["--fan"]),
])
def test_power_wrappers_refuse_the_rest(tmp_path, script, args):
    env, log_file = _fake_bin(tmp_path)
    r = subprocess.run([str(SYSTEMD_DIR / script), *args], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and not log_file.exists()


POLKIT_HARNESS = """
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no"}, addRule: (f) => rules.push(f)};
eval(require("fs").readFileSync(process.argv[2], "utf8"));
const out = JSON.parse(process.argv[3]).map(([user, verb, unit, id]) => {
    const action = {id: id || "org.freedesktop.systemd1.manage-units",
                    lookup: (k) => ({verb: verb, unit: unit})[k]};
    return rules.map((r) => r(action, {user: user})).find((v) => v !== undefined) || null;
});
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (it runs the polkit rule's JavaScript)")
def test_polkit_rule_lets_the_appliance_start_only_the_power_helper_units(tmp_path):
    """The rule file itself, run by node the way polkitd calls it (addRule, action.lookup,
    subject.user): yes for user appliance starting appliance-power@*.service, no opinion
    (left to polkit's defaults: no) for anything else."""
    harness = tmp_path / "harness.js"
    harness.write_text(POLKIT_HARNESS)
    cases = [
        ["appliance", "start", "appliance-power@nvpmodel-0.service"],
        ["appliance", "start", "appliance-power@clocks-lock.service"],
        ["appliance", "stop", "appliance-power@nvpmodel-0.service"],
        ["appliance", "start", "appliance.service"],
        ["appliance", "start", "sshd.service"],
        ["appliance", "start", "appliance-power@x;y.service"],
        ["pi", "start", "appliance-power@nvpmodel-0.service"],
        ["appliance", "start", "appliance-power@nvpmodel-0.service", "org.freedesktop.login1.reboot"],
    ]
    r = subprocess.run(["node", str(harness), str(SYSTEMD_DIR / "polkit-appliance-power.rules"), json.dumps(cases)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["yes", "yes", None, None, None, None, None, None]
