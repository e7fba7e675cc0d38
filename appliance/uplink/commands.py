"""Commands from `<prefix>/<device>/cmd/<name>`, answered on `<prefix>/<device>/cmd/result`.

A request is a JSON object (an empty payload counts as `{}`); its `correlation_id`, if
any, is copied into the result. Anything wrong with a request (not JSON, not an object,
an unknown command, a bad argument) gets a result with `ok: false` and an `error` that
says what, and nothing else happens. Handlers run in the uplink thread.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from appliance import __version__
from appliance.config import Config, to_dict
from appliance.times import parse_iso

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024


class BadCommand(Exception):
    """The request cannot be carried out; the message goes back in the result."""


@dataclass
class Reply:
    command: str | None
    correlation_id: Any
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    snapshot: bytes | None = None  # published on the snapshot topic before the result


def parse_since(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise BadCommand("resync: 'since' is required: unix seconds or an ISO 8601 time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            raise BadCommand(f"resync: 'since' must be unix seconds or an ISO 8601 time, got {value!r}") from None
    raise BadCommand(f"resync: 'since' must be unix seconds or an ISO 8601 time, got {type(value).__name__}")


class Commands:
    """`ping`, `snapshot`, `config/get`, `resync`; with a pipeline's model manager also
    `model/list`, `model/activate`, `model/rollback` (appliance/modelstore/swap.py)."""

    def __init__(self, cfg: Config, jpeg: Callable[[str], bytes | None] | None,
                 cameras: Callable[[], list[str]] | None, resync: Callable[[float], int],
                 models: Any = None):
        self.cfg, self._jpeg, self._cameras, self._resync = cfg, jpeg, cameras, resync
        self._models = models
        self.started = time.time()
        self.handlers: dict[str, Callable[[dict[str, Any]], Reply | dict[str, Any]]] = {
            "ping": self.ping, "snapshot": self.snapshot, "config/get": self.config_get,
            "resync": self.resync,
        }
        if models is not None:
            self.handlers.update({"model/list": self.model_list, "model/activate": self.model_activate,
                                  "model/rollback": self.model_rollback})

    def run(self, name: str, payload: bytes) -> Reply:
        correlation_id = None
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                raise BadCommand(f"request is {len(payload)} bytes; at most {MAX_REQUEST_BYTES}")
            try:
                request = json.loads(payload) if payload.strip() else {}
            except (ValueError, UnicodeDecodeError) as e:
                raise BadCommand(f"request is not valid JSON: {e}") from None
            if not isinstance(request, dict):
                raise BadCommand(f"request must be a JSON object, got {type(request).__name__}")
            correlation_id = request.get("correlation_id")
            if not isinstance(correlation_id, (str, int, type(None))) or isinstance(correlation_id, bool):
                correlation_id = None
                raise BadCommand("correlation_id must be a string or an integer")
            handler = self.handlers.get(name)
            if handler is None:
                raise BadCommand(f"unknown command {name!r}; known: {', '.join(self.handlers)}")
            out = handler(request)
            reply = out if isinstance(out, Reply) else Reply(name, correlation_id, True, out)
            reply.command, reply.correlation_id = name, correlation_id
            return reply
        except BadCommand as e:
            return Reply(name if name in self.handlers else None, correlation_id, False, error=str(e))
        except Exception as e:  # a bug in a handler must not take the uplink down
            log.exception("uplink: command %s failed", name)
            return Reply(name, correlation_id, False, error=f"internal error: {type(e).__name__}: {e}")

    def ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "version": __version__, "uptime_s": round(time.time() - self.started, 1)}

    def snapshot(self, request: dict[str, Any]) -> Reply:
        cameras = self._cameras() if self._cameras else []
        camera = request.get("camera", cameras[0] if cameras else None)
        if self._jpeg is None or camera is None:
            raise BadCommand("snapshot: no camera has produced a frame yet")
        if not isinstance(camera, str):
            raise BadCommand(f"snapshot: 'camera' must be a string, got {type(camera).__name__}")
        known = [c.id for c in self.cfg.cameras]
        if camera not in known:
            raise BadCommand(f"snapshot: unknown camera {camera!r}; cameras: {', '.join(known)}")
        data = self._jpeg(camera)
        if not data:
            raise BadCommand(f"snapshot: camera {camera!r} has produced no frame yet")
        return Reply("snapshot", None, True, {"camera": camera, "bytes": len(data),
                                              "content_type": "image/jpeg"}, snapshot=data)

    def config_get(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"config": to_dict(self.cfg)}  # secrets masked

    def resync(self, request: dict[str, Any]) -> dict[str, Any]:
        since = parse_since(request.get("since"))
        return {"since": since, "requeued": self._resync(since)}

    # Model versions. Activation loads and self-checks the candidate in this (the uplink)
    # thread, a second or two, while the detect stage goes on with the running model.

    def model_list(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._models.listing()

    def model_activate(self, request: dict[str, Any]) -> dict[str, Any]:
        from appliance.modelstore import ModelRef, ModelStoreError

        model, version = request.get("model"), request.get("version")
        if not isinstance(model, str) or not model:
            raise BadCommand("model/activate: 'model' is required: NAME@VERSION, or NAME with 'version'")
        if version is not None:
            if not isinstance(version, str) or not version or "@" in model:
                raise BadCommand("model/activate: 'version' must be a non-empty string, "
                                 "given with a 'model' that has no @VERSION")
            model = str(ModelRef(model, version))
        try:
            return self._models.activate(model, reason="mqtt model/activate")
        except ModelStoreError as e:
            raise BadCommand(f"model/activate: {e}") from None

    def model_rollback(self, request: dict[str, Any]) -> dict[str, Any]:
        from appliance.modelstore import ModelStoreError

        try:
            return self._models.rollback(reason="mqtt model/rollback")
        except ModelStoreError as e:
            raise BadCommand(f"model/rollback: {e}") from None
