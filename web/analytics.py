"""Lines and zones in the dashboard: what is configured, their live counts, the editor's
save, and the per-minute counts for the chart (docs/dashboard.md).

GET  /api/analytics             every camera: {frame: [w, h] | null, lines, zones (as configured),
                                counts (live, since start or the last save) | null}, and whether
                                the editor can save (`editable`, `config_file`)
GET  /api/analytics/<camera>    one camera, the same shape
PUT  /api/analytics/<camera>    body {"lines": [...], "zones": [...]} (either may be left out:
                                kept as they are). Validates the whole config file with the
                                camera's new lines and zones as `appliance config check` does,
                                writes it atomically keeping its comments, and applies them
                                without a restart. 400 with the config's messages (the file
                                untouched), 404 for an unknown camera, 409 with no config file.
                                POST does the same (for clients without PUT).
GET  /api/rollups?since&until&bucket&camera&kind&by&direction&name
                                line crossings or zone visits per minute (store/rollups.py),
                                summed into buckets of whole minutes, in /api/counts's shape
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flask import Blueprint, current_app, jsonify, request
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from werkzeug.exceptions import RequestEntityTooLarge

from appliance import config as config_mod
from appliance import paths
from appliance.config import CameraConfig, Config
from appliance.config.analytics import check_frame_bounds
from appliance.config.base import Problems
from appliance.config.cameras import default_cameras
from appliance.errors import ApplianceError
from web import configfile, params
from web.params import BadParam

bp = Blueprint("analytics", __name__, url_prefix="/api")

MAX_BODY = 256 * 1024  # a few hundred zones of many points; the app's default is 16 kB
MAX_BUCKETS = 2000
KINDS = ("line", "zone")
BY = ("direction", "label", "type")  # the first is the default
DIRECTIONS = ("in", "out", "enter", "exit", "loiter", "speeding")
EDITED_KEYS = ("lines", "zones")
FIRST_KEYS = ("name", "points")  # a new line or zone is written with these first

NO_FILE = ("the appliance runs the built-in demo config (started without --config FILE), so there is "
           "no file to save lines and zones to; start it with 'appliance run --config FILE' "
           "(an empty file is the demo too) and edit again")


@dataclass
class AnalyticsHooks:
    """What the web app reads from and tells the running pipeline."""

    counts: Callable[[str], dict | None]  # camera id -> CameraAnalytics.counts(), None: none running
    apply: Callable[[str, CameraConfig], None]  # Pipeline.apply_analytics: new lines and zones, now


def pipeline_hooks(pipeline: Any) -> AnalyticsHooks:
    def counts(camera: str) -> dict | None:
        processor = pipeline.analytics.get(camera)
        return processor.counts() if processor is not None else None

    def apply(camera: str, cam: CameraConfig) -> None:
        pipeline.apply_analytics(camera, cam)

    return AnalyticsHooks(counts=counts, apply=apply)


class Conflict(ApplianceError):
    """The save cannot be done as asked (no config file, the camera is not in the file): 409."""


# Saves one at a time, so that the config the app shows and the pipeline's are the same last one.
_save_lock = threading.Lock()


@bp.errorhandler(BadParam)
def _bad_param(e: BadParam):
    return jsonify(error=str(e)), 400


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_e):
    return jsonify(error=f"body: larger than {MAX_BODY // 1024} kB"), 413


def _cfg() -> Config:
    return current_app.config["APPLIANCE_CONFIG"]


def _hooks() -> AnalyticsHooks | None:
    return current_app.extensions.get("appliance_analytics")


def _config_path() -> Path | None:
    return current_app.config.get("APPLIANCE_CONFIG_PATH")


def _camera(camera: str) -> tuple[int, CameraConfig | None]:
    for i, cam in enumerate(_cfg().cameras):
        if cam.id == camera:
            return i, cam
    return -1, None


def _not_found(camera: str):
    known = ", ".join(c.id for c in _cfg().cameras)
    return jsonify(error=f"camera {camera[:80]!r}: unknown (cameras: {known})"), 404


def _camera_json(cam: CameraConfig) -> dict[str, Any]:
    live = current_app.extensions.get("appliance_live")
    size = live.frame_size(cam.id) if live is not None else None
    hooks = _hooks()
    return {
        "frame": list(size) if size else None,
        "lines": [line.model_dump(mode="json") for line in cam.lines],
        "zones": [zone.model_dump(mode="json") for zone in cam.zones],
        "counts": hooks.counts(cam.id) if hooks is not None else None,
    }


def _no_params() -> None:
    """These routes take no query parameters: one given is a mistake worth saying."""
    if request.args:
        raise BadParam(f"{next(iter(request.args))[:80]}: unknown parameter (this route takes none)")


def _editable() -> dict[str, Any]:
    path = _config_path()
    return {"editable": path is not None, "config_file": str(path) if path else None,
            "reason": None if path else NO_FILE}


@bp.get("/analytics")
def all_cameras():
    _no_params()
    return jsonify(cameras={cam.id: _camera_json(cam) for cam in _cfg().cameras}, **_editable())


@bp.get("/analytics/<camera>")
def one_camera(camera: str):
    _no_params()
    _, cam = _camera(camera)
    if cam is None:
        return _not_found(camera)
    return jsonify(camera=camera, **_camera_json(cam), **_editable())


@bp.route("/analytics/<camera>", methods=["PUT", "POST"])
def save(camera: str):
    _no_params()
    index, running = _camera(camera)
    if running is None:
        return _not_found(camera)
    path = _config_path()
    if path is None:
        return jsonify(error=NO_FILE), 409
    request.max_content_length = MAX_BODY
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error='body: expected a JSON object {"lines": [...], "zones": [...]} '
                             "(Content-Type: application/json)"), 400
    unknown = sorted(set(body) - set(EDITED_KEYS))
    if unknown:
        return jsonify(error=f"body.{unknown[0][:80]}: unknown key (valid keys: {', '.join(EDITED_KEYS)})"), 400

    with _save_lock:
        live = current_app.extensions.get("appliance_live")
        size = live.frame_size(camera) if live is not None else None
        try:
            saved = configfile.edit(path, lambda data: _replace(data, path, camera, body),
                                    validate=lambda text, origin: _validate(text, origin, camera, size))
        except Conflict as e:
            return jsonify(error=str(e)), 409
        except ApplianceError as e:  # the config's own messages, one per line; the file is untouched
            lines = str(e).splitlines()
            return jsonify(error=str(e), errors=lines), 400
        loaded = next(c for c in saved.cameras if c.id == camera)
        # The running camera keeps everything else as it started (a --loop given on the command
        # line, say); only its lines and zones change.
        updated = running.model_copy(update={"lines": loaded.lines, "zones": loaded.zones})
        cfg = _cfg()
        cameras = list(cfg.cameras)
        cameras[index] = updated
        current_app.config["APPLIANCE_CONFIG"] = cfg.model_copy(update={"cameras": cameras})
        applied, note = _apply(camera, updated)
    return jsonify(camera=camera, saved=str(path), applied=applied, note=note, **_camera_json(updated))


def _apply(camera: str, cam: CameraConfig) -> tuple[bool, str | None]:
    hooks = _hooks()
    if hooks is None:
        return False, "saved; no pipeline runs with this dashboard: the next start uses them"
    try:
        hooks.apply(camera, cam)
    except Exception as e:  # saved all the same: said, logged, and the next start applies them
        current_app.logger.exception("applying the lines and zones of camera %s failed", camera)
        return False, f"saved, but applying them failed ({e}); restart the appliance to use them"
    return True, None


def _validate(text: str, origin: str, camera: str, size: tuple[int, int] | None) -> Config:
    """As `appliance config check` and `appliance run` do, the files the config names included;
    and pixel coordinates within the frames the camera delivers, now that they are known."""
    cfg = config_mod.from_text(text, origin, assets_dir=paths.assets_dir(), warnings=[])
    if size is not None:
        p = Problems()
        for i, cam in enumerate(cfg.cameras):
            if cam.id == camera:
                check_frame_bounds(cam, size[0], size[1], p, "the frames this camera delivers",
                                   prefix=f"cameras[{i}].")
        if p.items:
            raise ApplianceError("\n".join(f"{origin}: {k}: {msg}" for k, msg in p.items))
    return cfg


def _replace(data: CommentedMap, path: Path, camera: str, body: dict) -> None:
    """Put the body's lines and zones into the camera's mapping of the parsed file."""
    cams = data.get("cameras")
    if cams is None:  # the file leaves the cameras to the default: write them out, to hold the lines
        data["cameras"] = cams = CommentedSeq(configfile.to_yaml(c.model_dump(mode="json", exclude_defaults=True))
                                              for c in default_cameras())
    if not isinstance(cams, list):
        raise ApplianceError(f"{path}: cameras: expected a list, got {type(cams).__name__}")
    entry = next((c for c in cams if isinstance(c, dict) and c.get("id") == camera), None)
    if entry is None:
        raise Conflict(f"{path}: cameras: no camera {camera!r} in the file (it changed since the appliance "
                       "started?); restart the appliance, or add the camera to the file")
    for key in EDITED_KEYS:
        if key not in body:
            continue
        new = body[key]
        if not isinstance(new, list):  # the config's check words the error (`cameras[0].lines: ...`)
            entry[key] = new
            continue
        if new and entry.fa.flow_style():  # `- {id: a, source: b}`: nested lists read better in blocks
            _to_block(cams, entry)
        old = entry.get(key)
        by_name = {o["name"]: o for o in old if isinstance(o, dict) and isinstance(o.get("name"), str)} \
            if isinstance(old, list) else {}
        seq = CommentedSeq(_merge(by_name.pop(_name(item), None), item) if isinstance(item, dict)
                           else configfile.to_yaml(item) for item in new)
        if new or key in entry:
            entry[key] = seq


def _to_block(seq: CommentedSeq, entry: CommentedMap) -> None:
    """A flow mapping in a list, in block style; its end-of-line comment moves to its first key
    (left where it was, ruamel would write it between the dash and the mapping)."""
    entry.fa.set_block_style()
    i = next(i for i, item in enumerate(seq) if item is entry)
    token = (seq.ca.items.get(i) or [None])[0]
    text = token.value.strip() if token is not None else ""
    if text.startswith("#") and "\n" not in text and len(entry):
        del seq.ca.items[i]
        entry.yaml_add_eol_comment(text, next(iter(entry)))


def _name(item: dict) -> str | None:
    name = item.get("name")
    return name if isinstance(name, str) else None


def _merge(old: CommentedMap | None, item: dict) -> Any:
    """The new line or zone; one that was in the file under the same name keeps its mapping,
    so the comments on its keys and the values that did not change stay as written."""
    if old is None:
        ordered = {k: item[k] for k in FIRST_KEYS if k in item}
        ordered.update((k, v) for k, v in item.items() if k not in ordered)
        return configfile.to_yaml(ordered)
    for k in [k for k in old if k not in item]:
        del old[k]
    for k, v in item.items():
        if k not in old or not configfile.same(old[k], v):
            old[k] = configfile.to_yaml(v)
    return old


# -- the counts chart -----------------------------------------------------------------------


@bp.get("/rollups")
def rollups():
    from appliance.store.rollups import query_rollups

    p = params.parse(request.args, {
        "since": params.time_value, "until": params.time_value,
        "bucket": lambda n, v: params.int_value(n, v, 1, 86400),
        "camera": params.name_value,
        "kind": lambda n, v: params.choice_value(n, v, KINDS),
        "by": lambda n, v: params.choice_value(n, v, BY),
        "direction": lambda n, v: params.choice_value(n, v, DIRECTIONS),
        "name": params.name_value,
    })
    until = p["until"] if p["until"] is not None else time.time()
    since = p["since"] if p["since"] is not None else until - 3600
    if since >= until:
        raise BadParam(f"since: must be before until (since={since:g}, until={until:g})")
    bucket = 60 * math.ceil((p["bucket"] or 60) / 60)  # the rollups are per minute
    if (until - since) / bucket > MAX_BUCKETS:
        raise BadParam(f"bucket: {bucket} s makes more than {MAX_BUCKETS} buckets between since "
                       f"and until; use a larger bucket or a shorter range")
    kind, by = p["kind"] or "line", p["by"] or "direction"
    start = math.floor(since / bucket) * bucket
    n = max(1, math.ceil((until - start) / bucket))
    rows = [r for r in query_rollups(current_app.extensions["appliance_db"].conn(), start, until,
                                     camera=p["camera"], kind=kind)
            if (p["direction"] is None or r["direction"] == p["direction"])
            and (p["name"] is None or r["name"] == p["name"])]
    several_cameras = len({r["camera"] for r in rows}) > 1
    series: dict[str, list[int]] = {}
    for r in rows:
        b = int((r["minute"] - start) // bucket)
        if not 0 <= b < n:
            continue
        if by == "type" and not r["type"]:
            continue  # no type decided: left out, as /api/counts?by=classification does
        name = f"{r['camera']}/{r['name']}" if several_cameras else r["name"]
        key = f"{name} {r['direction']}" + ("" if by == "direction" else f" · {r[by] or '?'}")
        series.setdefault(key, [0] * n)[b] += int(r["count"])
    return jsonify(bucket_s=bucket, start=start, kind=kind, by=by,
                   buckets=[start + i * bucket for i in range(n)], series=dict(sorted(series.items())))
