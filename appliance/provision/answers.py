"""What `appliance provision` asks, as one model: typed in a terminal (prompts.py) or read
from an `--answers FILE` (YAML or JSON) for fleets flashed in bulk.

Unknown keys are errors that name the key and the valid ones, like the config's:

    answers.yaml: mqtt.hots: unknown key (valid keys: host, port, ...)

An example answers file:

    device_id: gate-3
    cameras:
      - {id: north, source: "rtsp://viewer:secret@192.168.1.20:554/stream1"}
      - {id: yard, source: /dev/video0}
    detector: auto                    # auto | litert | edgetpu
    mqtt:
      host: mqtt.example.net
      port: 8883
      username: gate-3
      password: "..."                 # or leave it out and set APPLIANCE_MQTT_PASSWORD
      ca_file: /etc/appliance/fleet-ca.crt
      cert_file: /etc/appliance/tls/device.crt
      key_file: /etc/appliance/tls/device.key
      generate_key: false             # true: make tls/device.key and tls/device.csr for the fleet CA
    dashboard_password: "at least 8 characters"   # or dashboard_password_hash
    power: {policy: thermal}
"""
from __future__ import annotations

import os
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from appliance.config.loader import YamlProblem, parse_yaml, read_text
from appliance.errors import ApplianceError

MIN_PASSWORD = 8  # as `appliance passwd` (web/passwd.py)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CameraAnswer(_Strict):
    id: str = Field(min_length=1, description="camera name, unique on this device")
    source: str = Field(min_length=1, description="rtsp://..., /dev/videoN, v4l2:///dev/videoN, csi://N, a file")
    test: bool = Field(True, description="open it before writing the config and save a snapshot")


class MqttAnswer(_Strict):
    host: str = Field(min_length=1)
    port: Optional[int] = Field(None, ge=1, le=65535, description="default 8883 with TLS, 1883 without")
    topic_prefix: Optional[str] = None
    username: Optional[str] = None
    password: Optional[SecretStr] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    generate_key: bool = Field(False, description="make a device key and a CSR for the fleet's CA")
    test: bool = Field(True, description="connect to the broker before writing the config")


class PowerAnswer(_Strict):
    policy: Literal["monitor", "fixed", "thermal", "schedule"] = "monitor"
    mode: Optional[str] = None


class Answers(_Strict):
    device_id: str = Field(min_length=1)
    cameras: list[CameraAnswer] = Field(min_length=1)
    detector: Literal["auto", "litert", "edgetpu", "tensorrt"] = "auto"
    mqtt: Optional[MqttAnswer] = None  # None: no uplink, events stay on the device
    dashboard_password: Optional[SecretStr] = None
    dashboard_password_hash: Optional[str] = None
    power: PowerAnswer = Field(default_factory=PowerAnswer)

    @field_validator("dashboard_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_PASSWORD:
            raise ValueError(f"needs at least {MIN_PASSWORD} characters")
        return value

    @model_validator(mode="after")
    def _rules(self) -> "Answers":
        if self.dashboard_password is not None and self.dashboard_password_hash is not None:
            raise ValueError("give dashboard_password or dashboard_password_hash, not both")
        ids = [c.id for c in self.cameras]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"camera ids must be unique: {', '.join(twice)} given twice")
        return self


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model whose field the location ends at (for listing the valid keys)."""
    model: Any = Answers
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        for arg in (getattr(ann, "__args__", None) or (ann,)):
            inner = getattr(arg, "__args__", (arg,))[0] if getattr(arg, "__origin__", None) is list else arg
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
        else:
            return None
    return model


def error_lines(e: ValidationError) -> list[str]:
    """pydantic's errors as `key.path: message` lines."""
    lines = []
    for err in e.errors():
        where = _key_path(err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"])
            valid = f" (valid keys: {', '.join(parent.model_fields)})" if parent is not None else ""
            msg = f"unknown key{valid}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "too_short" and isinstance(err.get("input"), list):
            msg = "at least one is needed"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected'].replace(chr(39), '')}, got {err.get('input')!r}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def from_data(data: Any, origin: str = "answers") -> Answers:
    if not isinstance(data, dict):
        raise ApplianceError(f"{origin}: expected a mapping at the top, got {type(data).__name__}")
    try:
        return Answers.model_validate(data)
    except ValidationError as e:
        raise ApplianceError("\n".join(f"{origin}: {line}" for line in error_lines(e))) from None


def load(path: str | os.PathLike) -> Answers:
    """An answers file (YAML or JSON); ApplianceError names every problem at once."""
    try:
        data = parse_yaml(read_text(path))
    except OSError as e:
        raise ApplianceError(f"answers {path}: cannot read: {e.strerror or e}") from None
    except YamlProblem as e:
        raise ApplianceError("\n".join(f"{path}: {line}" for line in e.lines)) from None
    return from_data(data, str(path))
