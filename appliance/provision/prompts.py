"""`appliance provision` in a terminal: the questions, one at a time, with defaults.

Input is injectable (`ask`, `secret`, `out`), so tests answer the questions without a
terminal. A camera can be tried as soon as it is typed (`try_camera`): when it does not
answer, the installer sees why and types it again, or keeps it untested.
"""
from __future__ import annotations

import getpass
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from appliance.errors import ApplianceError
from appliance.provision import answers as answers_mod
from appliance.provision.answers import MIN_PASSWORD, Answers

TryCamera = Callable[[str, str], str]  # (id, source) -> what it saw; ApplianceError when it fails


@dataclass
class Terminal:
    ask: Callable[[str], str] = input
    secret: Callable[[str], str] = getpass.getpass
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def say(self, text: str) -> None:
        print(text, file=self.out)

    def text(self, question: str, default: str | None = None, *, required: bool = True,
             check: Callable[[str], str | None] | None = None) -> str:
        """A line; empty takes the default. `check` returns a problem or None."""
        shown = f" [{default}]" if default else ""
        while True:
            try:
                value = self.ask(f"{question}{shown}: ").strip()
            except EOFError:
                raise ApplianceError("provision: input ended before every question was answered") from None
            value = value or (default or "")
            if not value and required:
                self.say("  an answer is needed")
                continue
            problem = check(value) if (check and value) else None
            if problem:
                self.say(f"  {problem}")
                continue
            return value

    def yes(self, question: str, default: bool = False) -> bool:
        while True:
            value = self.text(f"{question} ({'Y/n' if default else 'y/N'})", required=False).lower()
            if not value:
                return default
            if value in ("y", "yes", "n", "no"):
                return value.startswith("y")
            self.say("  answer y or n")

    def password(self, question: str) -> str:
        while True:
            first = self.secret(f"{question}: ")
            if len(first) < MIN_PASSWORD:
                self.say(f"  at least {MIN_PASSWORD} characters")
                continue
            if self.secret("Again: ") != first:
                self.say("  the two differ; again")
                continue
            return first


def _port(value: str) -> str | None:
    return None if value.isdigit() and 1 <= int(value) <= 65535 else "a TCP port, 1-65535"


def _cameras(t: Terminal, devices: list[str], try_camera: TryCamera | None) -> list[dict[str, Any]]:
    if devices:
        t.say("Video devices here: " + ", ".join(devices))
    else:
        t.say("No /dev/video* devices here; an RTSP camera is given by its URL.")
    cams: list[dict[str, Any]] = []
    while True:
        n = len(cams) + 1
        cam_id = t.text(f"Camera {n} name (empty when done)" if cams else "Camera name",
                        None if cams else "cam1", required=not cams)
        if not cam_id:
            return cams
        if any(c["id"] == cam_id for c in cams):
            t.say(f"  {cam_id} is taken")
            continue
        while True:
            source = t.text(f"{cam_id}: source (rtsp://user:password@host/path, /dev/videoN)",
                            devices[0] if devices and not cams else None)
            if try_camera is None:
                cams.append({"id": cam_id, "source": source})
                break
            try:
                t.say(f"  trying {cam_id}...")
                t.say(f"  {try_camera(cam_id, source)}")
                cams.append({"id": cam_id, "source": source, "test": False})  # tested just now
                break
            except ApplianceError as e:
                t.say("  " + str(e).replace("\n", "\n  "))
                if t.yes("Keep it anyway (it is not tested again)?", False):
                    cams.append({"id": cam_id, "source": source, "test": False})
                    break


def ask_answers(t: Terminal, *, devices: list[str], defaults: dict[str, Any] | None = None,
                try_camera: TryCamera | None = None) -> Answers:
    """Ask every question; the Answers, validated like an --answers file."""
    d = defaults or {}
    t.say("Provisioning this appliance. Enter takes the value in [brackets].")
    data: dict[str, Any] = {
        "device_id": t.text("Device id (unique in the fleet; no '/', '+' or '#')", d.get("device_id")
                            or socket.gethostname(),
                            check=lambda v: "no '/', '+' or '#'" if any(c in v for c in "/+#") else None)}
    data["cameras"] = _cameras(t, devices, try_camera)
    detectors = ("auto", "litert", "edgetpu", "tensorrt")
    data["detector"] = t.text("Detector: auto (picks for this device), litert, edgetpu or tensorrt", "auto",
                              check=lambda v: None if v in detectors else "auto, litert, edgetpu or tensorrt")
    if t.yes("Send events to an MQTT broker?", bool(d.get("mqtt"))):
        m: dict[str, Any] = {"host": t.text("Broker host")}
        tls = t.yes("TLS (the broker's CA certificate file)?", True)
        m["port"] = int(t.text("Broker port", "8883" if tls else "1883", check=_port))
        if tls:
            m["ca_file"] = t.text("CA certificate file (PEM)")
            if t.yes("Client certificate?", False):
                if t.yes("Make a device key and a CSR for the fleet's CA now?", False):
                    m["generate_key"] = True
                else:
                    m["cert_file"] = t.text("Client certificate file (PEM)")
                    m["key_file"] = t.text("Its private key file (PEM)")
        user = t.text("User name (empty: none)", required=False)
        if user:
            m["username"] = user
            pw = t.secret("Broker password (empty: from $APPLIANCE_MQTT_PASSWORD): ")
            if pw:
                m["password"] = pw
        data["mqtt"] = m
    if t.yes("Set the dashboard password?", True):
        data["dashboard_password"] = t.password(f"Dashboard password (at least {MIN_PASSWORD} characters)")
    data["power"] = {"policy": t.text("Power policy: monitor, fixed, thermal or schedule", "monitor",
                                      check=lambda v: None if v in ("monitor", "fixed", "thermal", "schedule")
                                      else "monitor, fixed, thermal or schedule")}
    if data["power"]["policy"] == "schedule":
        t.say("  the schedule's entries go in the config's power.schedule (docs/config.md); monitor until then")
        data["power"]["policy"] = "monitor"
    elif data["power"]["policy"] in ("fixed", "thermal"):
        mode = t.text("Power mode to hold (empty: the fastest; `appliance power status` lists them)",
                      required=False)
        if mode:
            data["power"]["mode"] = mode
    return answers_mod.from_data(data, "your answers")
