"""`appliance provision` against real parts: a real mosquitto with TLS, client certificates
and passwords (tests/mqtt_broker.py), a real RTSP camera (tests/rtsp_server.py) and the demo
video; non-interactive from an --answers file, and interactive with injected input. Each
kind of bad input fails with what and a fix, and leaves the previous config as it was."""
from __future__ import annotations

import datetime as dt
import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.security import check_password_hash

from appliance import config as config_mod
from appliance import paths
from appliance.provision import answers as answers_mod
from appliance.provision import cameras, flow, prompts
from tests.mqtt_broker import Mosquitto, free_port, make_tls
from tests.rtsp_server import start_rtsp_server, stop_rtsp_server
from tests.unit.small_fs import fill, small_fs

PREVIOUS = "# the installer's old config\ndevice: {id: old-name}\nstore: {batch_size: 7}\n"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broker")
    tls = make_tls(folder / "tls")
    b = Mosquitto(folder / "broker", tls=tls, users={"gate-3": "right-password"}, require_certificate=True).start()
    yield b, tls
    b.close()


@pytest.fixture(scope="module")
def rtsp_camera():
    proc, port = start_rtsp_server(fps=10, size="320x240")
    yield f"rtsp://127.0.0.1:{port}/test"
    stop_rtsp_server(proc)


@pytest.fixture
def etc(tmp_path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "config.yaml").write_text(PREVIOUS)
    return d


def _answers(broker, tls, camera: str, **mqtt) -> dict:
    return {"device_id": "gate-3",
            "cameras": [{"id": "north", "source": camera}, {"id": "demo", "source": "asset:vtest.avi"}],
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "gate-3", "password": "right-password",
                     "ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key),
                     **mqtt},
            "dashboard_password": "installer-pw-1", "power": {"policy": "thermal"}}


def _options(etc: Path, data: Path, **kw) -> flow.Options:
    kw = {"selftest": False, "start": False, "timeout_s": 5.0, **kw}
    return flow.Options(config_path=etc / "config.yaml", data_dir=data, assets_dir=paths.assets_dir(), **kw)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "provision", *args],
                          capture_output=True, text=True, timeout=300)


def test_answers_file_writes_a_valid_config_and_keeps_the_previous(tls_broker, rtsp_camera, etc, tmp_path,
                                                                   assets_dir):
    broker, tls = tls_broker
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(_answers(broker, tls, rtsp_camera)))
    data = tmp_path / "data"
    r = _run_cli("--answers", str(answers), "--config", str(etc / "config.yaml"), "--data-dir", str(data),
                 "--no-start", "--no-selftest", "--timeout", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"ok    camera north: {rtsp_camera}: 320x240, snapshot saved to {data / 'provision/north.jpg'}" in out
    assert "ok    broker: 127.0.0.1:%d (TLS, user gate-3): connected, round trip" % broker.port in out
    assert "skip  service: not started (--no-start)" in out and "provision: done" in out
    for cam, size in (("north", (240, 320)), ("demo", (576, 768))):
        img = cv2.imread(str(data / "provision" / f"{cam}.jpg"))
        assert img is not None and img.shape[:2] == size, cam

    assert (etc / "config.yaml.bak").read_text() == PREVIOUS
    cfg = config_mod.load(etc / "config.yaml", assets_dir)  # valid, files included
    assert cfg.device.id == "gate-3" and [c.id for c in cfg.cameras] == ["north", "demo"]
    assert cfg.store.batch_size == 7  # what provision does not ask about is kept
    assert (cfg.detect.model, cfg.detect.backend) == ("ssd-mobilenet-v2", "litert")
    u = cfg.uplink
    assert u.enabled and (u.host, u.port, u.username) == ("127.0.0.1", broker.port, "gate-3")
    assert u.tls.cert_file == str(tls.client_cert) and config_mod.secret_value(u.password) == "right-password"
    assert check_password_hash(config_mod.secret_value(cfg.web.password_hash), "installer-pw-1")
    assert cfg.power.policy == "thermal"
    assert "installer-pw-1" not in (etc / "config.yaml").read_text()  # only the hash


def _expired_client_cert(tls, folder: Path) -> tuple[Path, Path]:
    ca_key = serialization.load_pem_private_key((tls.ca.parent / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gate-3")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "old.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "old.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "old.crt", folder / "old.key"


BAD = ["unreachable broker", "wrong CA", "expired certificate", "wrong password", "camera does not answer",
       "client cert without CA"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_with_a_fix_and_keeps_the_previous_config(case, tls_broker, rtsp_camera, etc, tmp_path):
    broker, tls = tls_broker
    a = _answers(broker, tls, rtsp_camera)
    a["cameras"] = a["cameras"][1:]  # the demo file: quick
    expect: tuple[str, str]
    if case == "unreachable broker":
        a["mqtt"]["port"] = free_port()
        expect = ("FAIL  broker: 127.0.0.1:%d (TLS, user gate-3): unreachable" % a["mqtt"]["port"],
                  "fix: check uplink.host and uplink.port")
    elif case == "wrong CA":
        a["mqtt"]["ca_file"] = str(make_tls(tmp_path / "other").ca)
        expect = ("FAIL  broker:", "TLS: the broker's certificate is not trusted")
    elif case == "expired certificate":
        crt, key = _expired_client_cert(tls, tmp_path / "old")
        a["mqtt"].update(cert_file=str(crt), key_file=str(key))
        expect = (f"FAIL  broker: {crt}: the certificate expired on ", "get a new certificate from the fleet CA")
    elif case == "wrong password":
        a["mqtt"]["password"] = "wrong-password"
        expect = ("the broker refused the connection: Not authorized", "fix: the broker refused the credentials")
    elif case == "camera does not answer":
        a["cameras"] = [{"id": "gate", "source": f"rtsp://127.0.0.1:{free_port()}/nothing"}]
        expect = ("FAIL  camera gate: cannot open rtsp://127.0.0.1:", "fix: check the URL")
    else:
        a["mqtt"].pop("ca_file")
        expect = ("FAIL  broker: a client certificate needs TLS", "fix: set mqtt.ca_file")
    out = io.StringIO()
    outcome = flow.provision(answers_mod.from_data(a), _options(etc, tmp_path / "data"), out)
    text = out.getvalue()
    assert not outcome.ok and not outcome.config_written, text
    for part in expect:
        assert part in text, text
    assert f"{etc / 'config.yaml'} is unchanged" in text
    assert (etc / "config.yaml").read_text() == PREVIOUS and not (etc / "config.yaml.bak").exists()


def test_answers_with_unknown_keys_are_refused_naming_them(etc, tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text("device_id: gate-3\ncameras: [{id: a, source: asset:vtest.avi, sorce: x}]\n"
                       "mqtt: {hots: broker.example}\ncolour: blue\n")
    r = _run_cli("--answers", str(answers), "--config", str(etc / "config.yaml"), "--data-dir",
                 str(tmp_path / "data"), "--no-start", "--no-selftest")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"appliance: error: {answers}: cameras[0].sorce: unknown key (valid keys: id, source, test)"
    assert f"{answers}: mqtt.hots: unknown key (valid keys: host, port, topic_prefix, " in r.stderr
    assert f"{answers}: mqtt.host: required key is missing" in r.stderr
    assert f"{answers}: colour: unknown key (valid keys: device_id, cameras, " in r.stderr
    assert lines[-1].startswith("  fix: correct or remove what the lines above name")
    assert lines[-1].endswith(f"nothing was changed ({etc / 'config.yaml'} is as it was)")
    assert (etc / "config.yaml").read_text() == PREVIOUS


def _remount_ro(root: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_a_full_or_read_only_disk_keeps_the_previous_config(trouble, tmp_path):
    with small_fs(tmp_path, 256 * 1024) as root:
        etc = root / "etc"
        etc.mkdir()
        (etc / "config.yaml").write_text(PREVIOUS)
        if trouble == "full":
            fill(root)
        else:
            _remount_ro(root)
        a = {"device_id": "gate-3", "cameras": [{"id": "demo", "source": "asset:vtest.avi"}]}
        out = io.StringIO()
        outcome = flow.provision(answers_mod.from_data(a), _options(etc, tmp_path / "data"), out)
        text = out.getvalue()
        assert not outcome.ok and outcome.failed_step == "write", text
        if trouble == "full":
            assert "No space left on device" in text and "fix: the disk holding" in text, text
        else:
            assert "Read-only file system" in text and "fix: " in text and "read-only file system" in text, text
        assert (etc / "config.yaml").read_text() == PREVIOUS
        assert not any(p.name.startswith(".config.yaml") for p in etc.iterdir())  # no temporary left


def test_interactive_with_injected_input(rtsp_camera, etc, tmp_path):
    data = tmp_path / "data"
    replies = iter([
        "gate-3",                                   # device id
        "north", "rtsp://127.0.0.1:9/nothing",      # a camera that does not answer ...
        "n",                                        # ... not kept: typed again
        rtsp_camera,
        "",                                         # no more cameras
        "",                                         # detector: auto
        "n",                                        # no broker
        "y",                                        # dashboard password
        "",                                         # power: monitor
    ])
    secrets = iter(["short", "installer-pw-1", "installer-pw-1"])  # too short, then twice
    out = io.StringIO()
    t = prompts.Terminal(ask=lambda q: (out.write(q), next(replies))[1], secret=lambda q: next(secrets), out=out)

    def try_camera(cam_id: str, source: str) -> str:
        r = cameras.test_camera(cam_id, cameras.as_source(source), data / "provision", 3.0)
        return f"{r.width}x{r.height}"

    a = prompts.ask_answers(t, devices=["/dev/video0"], try_camera=try_camera)
    text = out.getvalue()
    assert "Video devices here: /dev/video0" in text
    assert "camera north: cannot open rtsp://127.0.0.1:9/nothing" in text and "fix: check the URL" in text
    assert "320x240" in text and "at least 8 characters" in text
    calls = []
    opt = _options(etc, data, start=True, which=lambda name: "/bin/" + name,
                   runner=lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0, "", ""))
    outcome = flow.provision(a, opt, out)
    assert outcome.ok, out.getvalue()
    assert calls == [["systemctl", "enable", "appliance"], ["systemctl", "restart", "appliance"]]
    cfg = config_mod.load(etc / "config.yaml")
    assert cfg.cameras[0].source == rtsp_camera and not cfg.uplink.enabled
    assert check_password_hash(config_mod.secret_value(cfg.web.password_hash), "installer-pw-1")


def test_service_step_without_systemctl_or_when_it_fails(etc, tmp_path):
    a = answers_mod.from_data({"device_id": "gate-3", "cameras": [{"id": "demo", "source": "asset:vtest.avi"}]})
    out = io.StringIO()
    outcome = flow.provision(a, _options(etc, tmp_path / "d", start=True, which=lambda name: None), out)
    assert outcome.ok and "skip  service: systemctl not found" in out.getvalue()

    # The service does not take the new config: the previous one goes back, the new one is kept aside.
    provisioned = (etc / "config.yaml").read_text()
    assert provisioned != PREVIOUS
    (etc / "config.yaml").write_text(PREVIOUS)
    failing = lambda cmd: subprocess.CompletedProcess(cmd, 1, "", "Unit appliance.service not found.")  # noqa: E731
    out = io.StringIO()
    outcome = flow.provision(a, _options(etc, tmp_path / "d", start=True, which=lambda n: "/bin/x",
                                         runner=failing), out)
    text = out.getvalue()
    assert not outcome.ok and not outcome.config_written and outcome.rolled_back
    assert "FAIL  service: `systemctl enable appliance` failed (status 1): Unit appliance.service not found." in text
    assert "journalctl -u appliance" in text
    assert (etc / "config.yaml").read_text() == PREVIOUS
    assert config_mod.load(etc / "config.yaml.failed").device.id == "gate-3"  # the new one, for a look
    assert oct((etc / "config.yaml.failed").stat().st_mode & 0o777) == "0o600"  # it holds the password hash
    assert text.strip().splitlines()[-1] == (
        f"provision: failed at service; the previous config is back in {etc / 'config.yaml'}; the new one is "
        f"kept as {etc / 'config.yaml.failed'}")

    # A restart that fails: the previous config back, and the service restarted with it.
    calls: list[list[str]] = []

    def restart_fails_once(cmd):
        calls.append(cmd)
        bad = cmd[1] == "restart" and len(calls) == 2
        return subprocess.CompletedProcess(cmd, 1 if bad else 0, "", "Job for appliance.service failed." if bad else "")

    out = io.StringIO()
    outcome = flow.provision(a, _options(etc, tmp_path / "d", start=True, which=lambda n: "/bin/x",
                                         runner=restart_fails_once), out)
    assert not outcome.ok and outcome.rolled_back, out.getvalue()
    assert calls == [["systemctl", "enable", "appliance"], ["systemctl", "restart", "appliance"],
                     ["systemctl", "restart", "appliance"]]
    assert (etc / "config.yaml").read_text() == PREVIOUS
    assert "appliance.service restarted with the previous config" in out.getvalue()

    # No config before: none after either.
    (etc / "config.yaml").unlink()
    outcome = flow.provision(a, _options(etc, tmp_path / "d", start=True, which=lambda n: "/bin/x",
                                         runner=failing), io.StringIO())
    assert outcome.rolled_back and not (etc / "config.yaml").exists()


def test_generate_key_makes_a_csr_for_the_fleet_ca(tls_broker, etc, tmp_path):
    broker, tls = tls_broker
    a = _answers(broker, tls, "asset:vtest.avi", generate_key=True, test=False)
    a["cameras"] = a["cameras"][1:]
    for k in ("cert_file", "key_file"):
        a["mqtt"].pop(k)
    out = io.StringIO()
    outcome = flow.provision(answers_mod.from_data(a), _options(etc, tmp_path / "data"), out)
    assert outcome.ok, out.getvalue()
    csr = x509.load_pem_x509_csr((etc / "tls/device.csr").read_bytes())
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=gate-3"
    assert oct((etc / "tls/device.key").stat().st_mode & 0o777) == "0o640"
    assert "no certificate yet: save the signed one as" in out.getvalue()
    assert config_mod.load(etc / "config.yaml").uplink.tls.cert_file is None  # until the CA signs it


def test_the_self_test_runs_at_the_end(etc, tmp_path):
    pytest.importorskip("appliance.selftest.run")
    answers = tmp_path / "answers.yaml"
    answers.write_text("device_id: gate-3\ncameras: [{id: demo, source: 'asset:vtest.avi'}]\n")
    data = tmp_path / "data"
    r = _run_cli("--answers", str(answers), "--config", str(etc / "config.yaml"), "--data-dir", str(data),
                 "--no-start")
    out = r.stdout
    assert "self-test of gate-3 (appliance " in out and "camera:demo" in out, out + r.stderr
    assert (data / "selftest.json").is_file()
    failed = " 0 failed" not in out
    assert r.returncode == (1 if failed else 0), out
    assert ("provision: done, but the self-test found problems" if failed else "ok    self-test: nothing failed") in out


def test_without_a_terminal_or_answers_it_says_how(etc, tmp_path):
    r = subprocess.run([sys.executable, "-m", "appliance", "provision", "--config", str(etc / "config.yaml"),
                        "--data-dir", str(tmp_path / "data")], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == (
        "appliance: error: provision: standard input is not a terminal; give the answers in a file: "
        "--answers FILE (docs/installer-guide.md)")
    assert (etc / "config.yaml").read_text() == PREVIOUS


class Tty:
    """`appliance provision` on a real pseudo-terminal (its controlling terminal, as over SSH):
    waits for each question and types the answer."""

    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the appliance, on the terminal
            os.execv(sys.executable, [sys.executable, "-m", "appliance", "provision", *args])
        self.seen = ""
        self.pos = 0  # where the next expect() starts looking
        self.exited = False

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal (it exited)
            return False
        self.seen += data.decode(errors="replace")
        return bool(data)

    def expect(self, text: str, timeout_s: float = 120) -> None:
        """Wait for `text` after what the last expect() matched (one read may bring several lines)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.seen[self.pos:]:
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{self.seen[-2000:]!r}"
            assert self._read(0.2), f"the program ended before {text!r}:\n{self.seen[-2000:]!r}"
        self.pos += self.seen[self.pos:].index(text) + len(text)

    def answer(self, question: str, reply: str) -> None:
        self.expect(question)
        os.write(self.fd, reply.encode() + b"\n")

    def wait(self, timeout_s: float = 120) -> int:
        deadline = time.monotonic() + timeout_s
        while self._read(0.2) and time.monotonic() < deadline:
            pass
        _, status = os.waitpid(self.pid, 0)
        self.exited = True
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        if not self.exited:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
            os.close(self.fd)


def test_interactive_in_a_real_terminal(mqtt_broker, etc, tmp_path):
    data = tmp_path / "data"
    t = Tty("--config", str(etc / "config.yaml"), "--data-dir", str(data), "--no-start", "--no-selftest",
            "--timeout", "10")
    try:
        t.answer("Device id", "gate-7")
        t.answer("Camera name [cam1]: ", "demo")
        t.answer("demo: source", "asset:vtest.avi")
        t.expect(f"768x576, snapshot saved to {data / 'provision/demo.jpg'}: look at it")
        t.answer("Camera 2 name (empty when done): ", "")
        t.answer("Detector: auto", "")
        t.answer("Send events to an MQTT broker? (y/N): ", "y")
        t.answer("Broker host: ", "127.0.0.1")
        t.answer("TLS (the broker's CA certificate file)? (Y/n): ", "n")
        t.answer("Broker port [1883]: ", str(mqtt_broker.port))
        t.answer("User name (empty: none): ", "")
        t.answer("Set the dashboard password? (Y/n): ", "y")
        t.answer("Dashboard password (at least 8 characters): ", "installer-pw-1")  # getpass: /dev/tty, no echo
        t.answer("Again: ", "installer-pw-1")
        t.answer("Power policy: monitor, fixed, thermal or schedule [monitor]: ", "fixed")
        t.answer("Power mode to hold", "")
        t.expect("provision: done")
        status = t.wait()
    finally:
        t.kill()
    assert status == 0, t.seen[-3000:]
    assert "installer-pw-1" not in t.seen  # typed, never shown
    assert f"ok    broker: 127.0.0.1:{mqtt_broker.port} (no TLS, no user): connected, round trip" in t.seen
    cfg = config_mod.load(etc / "config.yaml")
    assert (cfg.device.id, [c.source for c in cfg.cameras]) == ("gate-7", ["asset:vtest.avi"])
    assert cfg.uplink.enabled and cfg.uplink.port == mqtt_broker.port and cfg.power.policy == "fixed"
    assert check_password_hash(config_mod.secret_value(cfg.web.password_hash), "installer-pw-1")
    assert (etc / "config.yaml.bak").read_text() == PREVIOUS
    assert cv2.imread(str(data / "provision/demo.jpg")).shape[:2] == (576, 768)
