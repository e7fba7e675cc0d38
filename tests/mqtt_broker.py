"""A real mosquitto for tests and benches, and a paho subscriber that records everything.

Mosquitto runs from Debian's package (scripts/system-packages.txt) with a generated
config, on 127.0.0.1 and a free port, in its own process group so that it can be
SIGKILLed and restarted on the same port. TLS material is made with the openssl CLI.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


@dataclass
class Tls:
    ca: Path
    cert: Path  # the broker's
    key: Path
    client_cert: Path  # a client's, signed by the same CA
    client_key: Path


def make_tls(folder: Path) -> Tls:
    """A CA, and a server certificate for 127.0.0.1 / localhost and a client certificate
    signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.crt"
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def signed(name: str, subject: str, *extra: str) -> tuple[Path, Path]:
        key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key), "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", *extra, "-out", str(cert))
        return cert, key

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=appliance test CA",
        "-keyout", str(ca_key), "-out", str(ca))
    cert, key = signed("server", "/CN=localhost", "-extfile", str(ext))
    client_cert, client_key = signed("client", "/CN=dev1")
    return Tls(ca, cert, key, client_cert, client_key)


class Mosquitto:
    def __init__(self, folder: Path, port: int | None = None, persistence: bool = False,
                 tls: Tls | None = None, users: dict[str, str] | None = None,
                 require_certificate: bool = False):
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed: run scripts/install-system-packages")
        self.folder = folder
        self.port = port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        lines = [f"listener {self.port} 127.0.0.1",
                 "user root",  # as root, mosquitto would switch to user mosquitto and lose the tmp files
                 # Consumers in tests may lag far behind a drain: queue for them, never drop.
                 "max_queued_messages 0",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true"]
        if persistence:
            # Save after every change (each queued message), not every 30 min: what the broker
            # acknowledged survives a SIGKILL, as far as mosquitto can promise it.
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_on_changes true",
                      "autosave_interval 1"]
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=out, stderr=out,
                                         start_new_session=True)
        _wait_port(self.port, timeout, self.proc, self.log)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    t: float


@dataclass
class Subscriber:
    """A paho client that records every message, in arrival order, from its own thread.

    With `session` (a client id), it keeps a persistent session (clean_session false),
    so the broker queues for it while it is away, persistence permitting.
    """

    port: int
    topics: list[str]
    session: str | None = None
    tls: Tls | None = None
    username: str = ""
    password: str = ""
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.session or "",
                        clean_session=self.session is None)
        if self.tls:
            c.tls_set(ca_certs=str(self.tls.ca), certfile=str(self.tls.client_cert),
                      keyfile=str(self.tls.client_key))
        if self.username:
            c.username_pw_set(self.username, self.password)
        c.reconnect_delay_set(1, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def start(self, timeout: float = 10.0) -> "Subscriber":
        self.client.connect_async("127.0.0.1", self.port, 30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError(f"subscriber could not connect to port {self.port}")
        time.sleep(0.2)  # let the SUBACK come back
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def exact(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def events(self) -> list[dict]:
        """Every event received on .../events, in arrival order, duplicates included."""
        return [e for m in self.on("/events") for e in json.loads(m.payload)["events"]]

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
