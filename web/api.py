"""The JSON API under /api/: everything the dashboard shows, for scripts too.

GET /api/status                 health: per camera, device, disk (state ok | low | full), services
                                (uplink, power, web)
GET /api/events?camera&label&type&classification&since&until&before&limit
                                events newest first, as stored; `next_before` pages on
GET /api/counts?since&until&bucket&camera&by
                                new tracks per label (by=label, the default) or per decided
                                type (by=classification) and time bucket
GET /api/filters                cameras, labels, types and event types to filter by
GET /api/config                 the effective config, secrets masked
GET /api/live/<camera>.jpg      the latest annotated frame (ETag: its frame number)
GET /api/snapshots/<event id>.jpg
                                the snapshot an `end` event names (its `snapshot`); 404 when none
                                or its file is gone
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request

from appliance import config as config_mod
from appliance.events.snapshots import is_snapshot_name, snapshots_dir
from appliance.events.types import ANALYTICS_TYPES, TRACK_TYPES
from appliance.store import queries
from appliance.store.db import open_db
from web import health, params
from web.params import BadParam

bp = Blueprint("api", __name__, url_prefix="/api")

EVENT_TYPES = TRACK_TYPES + ANALYTICS_TYPES  # what the events table lists and filters by (not state changes)
# The classifier's types (docs/events.md, `classification`): always offered as filter
# choices, beside any other type seen in the database (a different classifier model).
CLASSIFICATION_TYPES = ("car", "suv", "pickup", "van", "bus", "truck", "motorcycle", "bicycle",
                        "emergency", "other")
MAX_BUCKETS = 2000
LABELS_LOOKBACK_S = 7 * 86400


class ReadOnlyDB:
    """One read-only SQLite connection per server thread (WAL: readers never block the
    pipeline's writer). query_only makes any write an error, whatever the code does."""

    def __init__(self, path: Path):
        open_db(path).conn.close()  # create the file and bring its schema up to date once
        self.path = path
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
        return conn


def _db() -> sqlite3.Connection:
    return current_app.extensions["appliance_db"].conn()


def _status() -> dict:
    return current_app.extensions["appliance_status"].status()


@bp.errorhandler(BadParam)
def _bad_param(e: BadParam):
    return jsonify(error=str(e)), 400


@bp.get("/status")
def status():
    cfg = current_app.config["APPLIANCE_CONFIG"]
    snap = health.snapshot(_status(), current_app.config["APPLIANCE_DATA_DIR"],
                           current_app.extensions["appliance_db"].path)
    alive, reason = health.liveness(snap, cfg.web.stale_after_s)
    return jsonify({**snap, "device_id": cfg.device.id, "alive": alive, "health": reason})


@bp.get("/events")
def events():
    def text(name, value):
        return params.name_value(name, value)

    p = params.parse(request.args, {
        "camera": text, "label": text,
        "type": lambda n, v: params.choice_value(n, v, EVENT_TYPES),
        "classification": params.token_value,
        "since": params.time_value, "until": params.time_value,
        "before": lambda n, v: params.int_value(n, v, 1, 2**63 - 1),
        "limit": lambda n, v: params.int_value(n, v, 1, 500),
    })
    _check_range(p["since"], p["until"])
    flt = queries.EventFilter(camera=p["camera"], label=p["label"], type=p["type"],
                              classification=p["classification"], since=p["since"], until=p["until"])
    payloads, next_before = queries.events_page(_db(), flt, p["before"], p["limit"] or 50)
    # The payloads are the stored JSON text, sent as they are: not parsed and re-encoded.
    body = '{"events":[' + ",".join(payloads) + '],"next_before":' + json.dumps(next_before) + "}"
    return Response(body, mimetype="application/json")


@bp.get("/counts")
def counts():
    p = params.parse(request.args, {
        "since": params.time_value, "until": params.time_value,
        "bucket": lambda n, v: params.int_value(n, v, 1, 86400),
        "camera": lambda n, v: params.name_value(n, v),
        "by": lambda n, v: params.choice_value(n, v, queries.COUNT_BY),
    })
    until = p["until"] if p["until"] is not None else time.time()
    since = p["since"] if p["since"] is not None else until - 900
    bucket = p["bucket"] or 30
    _check_range(since, until)
    if (until - since) / bucket > MAX_BUCKETS:
        raise BadParam(f"bucket: {bucket} s makes more than {MAX_BUCKETS} buckets between since "
                       f"and until; use a larger bucket or a shorter range")
    return jsonify(queries.counts_by_label(_db(), since, until, bucket, p["camera"], p["by"] or "label"))


@bp.get("/filters")
def filters():
    cfg = current_app.config["APPLIANCE_CONFIG"]
    db = _db()
    cameras = set(queries.cameras_seen(db)) | {c.id for c in cfg.cameras}
    lookback = time.time() - LABELS_LOOKBACK_S
    labels = set(queries.labels_seen(db, lookback)) | set(cfg.detect.classes)
    classifications = list(CLASSIFICATION_TYPES) + sorted(
        set(queries.classifications_seen(db, lookback)) - set(CLASSIFICATION_TYPES))
    return jsonify(cameras=sorted(cameras), labels=sorted(labels), types=list(EVENT_TYPES),
                   classifications=classifications)


@bp.get("/config")
def effective_config():
    return jsonify(config_mod.mask_secrets(config_mod.to_dict(current_app.config["APPLIANCE_CONFIG"])))


@bp.get("/live/<camera>.jpg")
def live_jpeg(camera: str):
    live = current_app.extensions["appliance_live"]
    seq = live.frame_seq(camera) if live is not None else None
    if seq is None:
        return jsonify(error=f"camera {camera!r}: unknown, or no frame yet"), 404
    etag = f"{camera}-{seq}"
    # A viewer that already has this frame gets 304 before anything is drawn or encoded.
    if request.if_none_match.contains(etag):
        resp = Response(status=304)
    else:
        resp = Response(live.jpeg(camera), mimetype="image/jpeg")
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/snapshots/<event_id>.jpg")
def snapshot_jpeg(event_id: str):
    """The JPEG of the best crop an `end` event names (appliance/events/snapshots.py)."""
    row = _db().execute("SELECT payload FROM events WHERE id = ?", [event_id]).fetchone()
    name = None
    if row is not None and '"snapshot"' in row[0]:
        try:
            name = json.loads(row[0]).get("snapshot")
        except (ValueError, AttributeError):
            name = None
    data = None
    if is_snapshot_name(name):  # a plain file name: nothing outside the folder is served
        try:
            data = (snapshots_dir(current_app.config["APPLIANCE_DATA_DIR"]) / name).read_bytes()
        except OSError:  # removed by the quota (oldest first), or never written
            data = None
    if not data:
        return jsonify(error=f"event {event_id!r}: unknown, or no snapshot kept"), 404
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "private, max-age=86400"  # an event's snapshot never changes
    return resp


def _check_range(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and since >= until:
        raise BadParam(f"since: must be before until (since={since:g}, until={until:g})")
