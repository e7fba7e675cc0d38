"""GET /api/snapshots/<event id>.jpg: the JPEG an `end` event names, behind the login."""
from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import Config, WebConfig
from appliance.events.lifecycle import Event
from appliance.events.snapshots import snapshots_dir
from appliance.store.writer import EventWriter
from web import create_app
from web.auth import hash_password

PASSWORD = "correct horse battery"


class Status:
    def status(self):
        return {"running": True, "heartbeat_age_s": 0.1, "cameras": {}, "services": {}}


def _event(seq: int, kind: str, snapshot: str | None = None) -> Event:
    t = time.time()
    return Event(id=f"dev:{seq}", seq=seq, type=kind, device="dev", camera="gate", track_id=7, label="person",
                 score=0.45, box=[1.0, 2.0, 3.0, 4.0], ts=t, first_seen=t, frame_seq=seq, snapshot=snapshot)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, bytes]:
    """A data directory: events 1 (new), 2 (end with a snapshot), 3 (end whose file is gone)."""
    data_dir = tmp_path / "data"
    w = EventWriter(data_dir / "appliance.db").start()
    w.put([_event(1, "new"), _event(2, "end", "gate-7.jpg"), _event(3, "end", "gate-8.jpg")])
    w.close()
    crop = np.full((40, 20, 3), 128, np.uint8)
    jpeg = cv2.imencode(".jpg", crop)[1].tobytes()
    snapshots_dir(data_dir).mkdir()
    (snapshots_dir(data_dir) / "gate-7.jpg").write_bytes(jpeg)
    return data_dir, jpeg


def _client(data_dir: Path):
    cfg = Config()
    cfg.device.id = "dev"
    cfg.web = WebConfig(password_hash=hash_password(PASSWORD))
    app = create_app(cfg, Status(), data_dir / "appliance.db", None, data_dir=data_dir)
    app.config["TESTING"] = True
    return app.test_client()


def _login(c) -> None:
    html = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert c.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 302


def test_snapshot_needs_login(data):
    c = _client(data[0])
    r = c.get("/api/snapshots/dev:2.jpg")
    assert r.status_code == 401 and r.json == {"error": "login required"}


def test_snapshot_is_served_as_jpeg(data):
    data_dir, jpeg = data
    c = _client(data_dir)
    _login(c)
    r = c.get("/api/snapshots/dev:2.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.data == jpeg
    assert cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).shape == (40, 20, 3)
    assert "max-age" in r.headers["Cache-Control"]  # an event's snapshot never changes
    r = c.get("/api/snapshots/dev%3A2.jpg")  # as the dashboard asks for it (encodeURIComponent)
    assert r.status_code == 200 and r.data == jpeg
    events = c.get("/api/events").json["events"]
    assert [e.get("snapshot") for e in events] == [None, "gate-7.jpg", "gate-8.jpg"][::-1]


@pytest.mark.parametrize("event_id", ["dev:1", "dev:3", "dev:99", "nope", "..%2Fappliance.db"])
def test_unknown_events_events_without_one_and_gone_files_are_404(data, event_id):
    c = _client(data[0])
    _login(c)
    r = c.get(f"/api/snapshots/{event_id}.jpg")
    assert r.status_code == 404 and "error" in r.json
    assert r.headers["Cache-Control"] == "no-store"
