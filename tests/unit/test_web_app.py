"""The dashboard app with a temporary database and a stand-in status: API, auth, health."""
from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.capture.frame import Frame
from appliance.config import Config, WebConfig
from appliance.detect.types import Detections
from appliance.events.lifecycle import Event
from appliance.live import LiveView
from appliance.result import FrameResult
from appliance.store.writer import EventWriter
from web import create_app
from web.auth import hash_password

T0 = 1_700_000_000.0  # 2023-11-14, a fixed time so buckets are predictable
PASSWORD = "correct horse battery"


class FakeStatus:
    """The shape of Pipeline.status(), with the fields the web app reads."""

    def __init__(self, **kw):
        self.values = {"running": True, "heartbeat_age_s": 0.2, "uptime_s": 12.0, "events_stored": 0,
                       "model": {"name": "m", "version": "1", "backend": "litert", "device": "cpu"},
                       "queue_depth": {"detect_to_track": 0, "store": 0},
                       "cameras": {"gate": {"fps": 10.0, "inference_ms_p50": 12.0, "inference_ms_p95": 15.0,
                                            "frames": 5, "dropped": 1, "corrupt": 0, "live_tracks": 2,
                                            "queue_depth": {"capture": 0}}},
                       "services": {}, **kw}

    def status(self):
        return dict(self.values)


class CountingLive(LiveView):
    def __init__(self):
        super().__init__(["person"])
        self.encodes = 0

    def _draw(self, latest):
        self.encodes += 1
        return super()._draw(latest)


def _event(seq, ts, camera="gate", label="person", type_="new") -> Event:
    return Event(id=f"dev:{seq}", seq=seq, type=type_, device="dev", camera=camera, track_id=seq,
                 label=label, score=0.9, box=[1.0, 2.0, 3.0, 4.0], ts=ts, first_seen=ts, frame_seq=seq)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """60 events: cameras gate/yard alternating, every 3rd a car, one a second from T0."""
    path = tmp_path / "appliance.db"
    w = EventWriter(path).start()
    w.put([_event(i, T0 + i, camera="gate" if i % 2 else "yard", label="car" if i % 3 == 0 else "person",
                  type_="new" if i % 4 else "end") for i in range(1, 61)])
    w.close()
    return path


def _cfg(password: str | None = PASSWORD, **web) -> Config:
    cfg = Config()
    cfg.device.id = "dev"
    cfg.web = WebConfig(password_hash=hash_password(password) if password else "", **web)
    cfg.cameras[0].source = "rtsp://viewer:hunter2@10.0.0.5/stream"
    return cfg


def _app(db_path, cfg=None, status=None, live=None):
    app = create_app(cfg or _cfg(), status or FakeStatus(), db_path, live)
    app.config["TESTING"] = True
    return app


def _csrf(client, path="/login") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client, password=PASSWORD):
    return client.post("/login", data={"password": password, "csrf_token": _csrf(client)})


@pytest.fixture
def client(db_path):
    c = _app(db_path).test_client()
    assert _login(c).status_code == 302
    return c


# -- auth ------------------------------------------------------------------------------

def test_pages_and_api_need_login_but_healthz_and_metrics_do_not(db_path):
    c = _app(db_path).test_client()
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    for path in ("/api/status", "/api/events", "/api/counts", "/api/config", "/api/filters",
                 "/api/live/gate.jpg"):
        r = c.get(path)
        assert r.status_code == 401 and r.json == {"error": "login required"}, path
    assert c.get("/healthz").status_code == 200
    r = c.get("/metrics")
    assert r.status_code == 200 and b"appliance_frames_total" in r.data


def test_login_sets_an_httponly_samesite_cookie_and_opens_the_api(db_path):
    c = _app(db_path).test_client()
    r = _login(c)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/api/status").status_code == 200
    assert "Log out" in c.get("/").get_data(as_text=True)


def test_wrong_password_is_401_and_failures_are_rate_limited(db_path):
    c = _app(db_path).test_client()
    for _ in range(5):
        r = _login(c, "wrong password")
        assert r.status_code == 401 and "Wrong password" in r.get_data(as_text=True)
    r = _login(c)  # even the right password waits now
    assert r.status_code == 429 and "Too many failed logins" in r.get_data(as_text=True)
    assert int(r.headers["Retry-After"]) > 0
    assert c.get("/api/status").status_code == 401


def test_state_changing_requests_need_the_csrf_token(db_path, client):
    fresh = _app(db_path).test_client()
    r = fresh.post("/login", data={"password": PASSWORD})  # no token: refused before the password check
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    assert client.post("/logout").status_code == 400  # logged in, but no token
    assert client.get("/api/status").status_code == 200
    r = client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert r.status_code == 302
    assert client.get("/api/status").status_code == 401


def test_login_redirects_only_to_paths_on_this_site(db_path):
    c = _app(db_path).test_client()
    token = _csrf(c)
    r = c.post("/login?next=//evil.example/x", data={"password": PASSWORD, "csrf_token": token})
    assert r.headers["Location"] == "/"


def test_without_a_password_the_dashboard_is_open_and_says_it_is_local_only(db_path):
    c = _app(db_path, cfg=_cfg(password=None)).test_client()
    html = c.get("/").get_data(as_text=True)
    assert "No password is set" in html and "127.0.0.1" in html
    assert c.get("/api/status").status_code == 200
    assert c.get("/login").status_code == 302


def test_security_headers(client):
    r = client.get("/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert client.get("/api/status").headers["Cache-Control"] == "no-store"


# -- events and counts ----------------------------------------------------------------

def test_events_newest_first_and_paged_without_gaps_or_repeats(client):
    seen, before = [], None
    while True:
        r = client.get("/api/events", query_string={"limit": 25, **({"before": before} if before else {})})
        assert r.status_code == 200
        seen += [e["seq"] for e in r.json["events"]]
        before = r.json["next_before"]
        if before is None:
            break
    assert seen == list(range(60, 0, -1))


def test_events_filters_combine(client):
    r = client.get("/api/events", query_string={"camera": "gate", "label": "car", "type": "new",
                                                "since": T0 + 10, "until": T0 + 40})
    got = r.json["events"]
    expected = [i for i in range(10, 40) if i % 2 and i % 3 == 0 and i % 4][::-1]
    assert [e["seq"] for e in got] == expected and expected
    assert all(e["camera"] == "gate" and e["label"] == "car" and e["type"] == "new" for e in got)
    # ISO 8601 times are accepted too.
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(T0 + 50))
    got = client.get("/api/events", query_string={"since": iso}).json["events"]
    assert [e["seq"] for e in got] == list(range(60, 49, -1))


def test_events_are_sent_as_stored(client, db_path):
    import sqlite3
    stored = sqlite3.connect(db_path).execute("SELECT payload FROM events WHERE seq = 60").fetchone()[0]
    body = client.get("/api/events?limit=1").get_data(as_text=True)
    assert body == '{"events":[' + stored + '],"next_before":60}'  # the next page: seq < 60


def test_a_filter_value_is_data_never_sql(client, db_path):
    r = client.get("/api/events", query_string={"camera": "gate' OR '1'='1"})
    assert r.status_code == 200 and r.json["events"] == []
    r = client.get("/api/events", query_string={"label": "x'; DROP TABLE events; --"})
    assert r.status_code == 200 and r.json["events"] == []
    assert len(client.get("/api/events?limit=500").json["events"]) == 60


def test_counts_by_label_in_time_buckets(client):
    r = client.get("/api/counts", query_string={"since": T0, "until": T0 + 60, "bucket": 20})
    assert r.status_code == 200
    data = r.json
    assert data["buckets"] == [T0, T0 + 20, T0 + 40]  # T0 is a multiple of 20
    # 'new' events only (seq not a multiple of 4), in [T0, T0+60): seq 1..59
    def count(lo, hi, car):
        return sum(1 for i in range(lo, hi) if i % 4 and (i % 3 == 0) == car)
    assert data["series"]["car"] == [count(1, 20, True), count(20, 40, True), count(40, 60, True)]
    assert data["series"]["person"] == [count(1, 20, False), count(20, 40, False), count(40, 60, False)]
    r = client.get("/api/counts", query_string={"since": T0, "until": T0 + 60, "bucket": 100, "camera": "yard"})
    assert r.json["series"]["person"] == [sum(1 for i in range(1, 60) if i % 4 and i % 3 and i % 2 == 0)]


@pytest.mark.parametrize("query, message", [
    ("/api/events?limit=0", "limit: must be between 1 and 500, got 0"),
    ("/api/events?limit=ten", "limit: expected an integer, got 'ten'"),
    ("/api/events?since=yesterday", "since: expected unix seconds or an ISO 8601 time, got 'yesterday'"),
    ("/api/events?type=start", "type: must be one of new, update, end, line, zone, got 'start'"),
    ("/api/events?cam=gate", "cam: unknown parameter (valid: camera, label"),
    ("/api/events?since=200&until=100", "since: must be before until"),
    ("/api/events?before=-3", "before: must be between 1 and"),
    ("/api/counts?bucket=abc", "bucket: expected an integer, got 'abc'"),
    ("/api/counts?since=0&until=1000000&bucket=1", "bucket: 1 s makes more than 2000 buckets"),
    ("/api/counts?since=nan", "since: expected a time after 1970"),
])
def test_a_malformed_parameter_is_a_400_naming_it(client, query, message):
    r = client.get(query)
    assert r.status_code == 400
    assert message in r.json["error"]


def test_filters_list_cameras_and_labels(client):
    f = client.get("/api/filters").json
    assert {"gate", "yard"} <= set(f["cameras"])  # "yard" is only in the database
    assert "car" in f["labels"] and "person" in f["labels"]
    assert f["types"] == ["new", "update", "end", "line", "zone"]


# -- health, config, live ---------------------------------------------------------------

def test_status_adds_disk_uptime_and_liveness(client):
    s = client.get("/api/status").json
    assert s["cameras"]["gate"]["dropped"] == 1 and s["model"]["name"] == "m"
    assert 0 <= s["disk"]["used_percent"] <= 100 and s["disk"]["free_bytes"] > 0
    assert s["database_bytes"] > 0 and s["alive"] is True and s["device_id"] == "dev"


@pytest.mark.parametrize("status, code, reason", [
    ({"running": True, "heartbeat_age_s": 0.5}, 200, "ok"),
    ({"running": True, "heartbeat_age_s": 30.0}, 503, "stale: no frame for 30.0 s (limit 10 s)"),
    ({"running": False, "heartbeat_age_s": 0.5}, 503, "stopped"),
])
def test_healthz_fails_when_the_heartbeat_is_stale_or_the_pipeline_stopped(db_path, status, code, reason):
    r = _app(db_path, status=FakeStatus(**status)).test_client().get("/healthz")
    assert r.status_code == code and r.json["reason"] == reason


def test_effective_config_masks_secrets(client):
    cfg = client.get("/api/config").json
    assert cfg["web"]["password_hash"] == "***"
    assert cfg["cameras"][0]["source"] == "rtsp://viewer:***@10.0.0.5/stream"
    assert cfg["device"]["id"] == "dev" and cfg["web"]["port"] == 8080
    assert "hunter2" not in client.get("/api/config").get_data(as_text=True)


def test_live_jpeg_encodes_only_when_asked_and_once_per_frame(db_path):
    live = CountingLive()
    c = _app(db_path, live=live).test_client()
    _login(c)
    assert c.get("/api/live/gate.jpg").status_code == 404  # no frame yet
    img = np.full((120, 160, 3), 80, np.uint8)
    for seq in range(5):
        live.update(FrameResult(Frame(img, "gate", seq, 0.0, 0.0), Detections.empty()))
    assert live.encodes == 0  # frames passing with nobody watching cost no encoding
    r = c.get("/api/live/gate.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.headers["ETag"] == '"gate-4"'
    assert cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    r = c.get("/api/live/gate.jpg", headers={"If-None-Match": '"gate-4"'})
    assert r.status_code == 304 and live.encodes == 1
    live.update(FrameResult(Frame(img, "gate", 5, 0.0, 0.0), Detections.empty()))
    r = c.get("/api/live/gate.jpg", headers={"If-None-Match": '"gate-4"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"gate-5"' and live.encodes == 2
    assert c.get("/api/live/nope.jpg").status_code == 404


def test_services_appear_in_status(db_path):
    status = FakeStatus(services={"uplink": {"state": "connected", "backlog": 3, "oldest_unsent_age_s": 1.5}})
    c = _app(db_path, status=status).test_client()
    _login(c)
    assert c.get("/api/status").json["services"]["uplink"]["backlog"] == 3


# -- classification: the classifier's type ------------------------------------------------

def _typed(seq, ts, track, type_, camera="gate", label="car", cls=None) -> Event:
    c = None if cls is None else {"label": cls, "score": 0.8, "votes": 2, "attempts": 3, "model": "m",
                                  "version": "1"}
    return Event(id=f"dev:{seq}", seq=seq, type=type_, device="dev", camera=camera, track_id=track,
                 label=label, score=0.9, box=[1.0, 2.0, 3.0, 4.0], ts=ts, first_seen=ts, frame_seq=seq,
                 classification=c)


@pytest.fixture
def typed_db(tmp_path) -> Path:
    """Tracks: 1 van, then pickup (its latest); 2 car (yard); 3 car known at `new`; 4 a person,
    never typed; 5 a type outside the usual list."""
    path = tmp_path / "typed.db"
    w = EventWriter(path).start()
    w.put([_typed(1, T0 + 1, 1, "new"), _typed(2, T0 + 2, 2, "new", camera="yard"),
           _typed(3, T0 + 3, 4, "new", label="person"), _typed(4, T0 + 5, 1, "update", cls="van"),
           _typed(5, T0 + 6, 2, "update", camera="yard", cls="car"), _typed(6, T0 + 9, 1, "update", cls="pickup"),
           _typed(7, T0 + 12, 1, "end", cls="pickup"), _typed(8, T0 + 25, 3, "new", cls="car"),
           _typed(9, T0 + 30, 5, "new", label="truck"), _typed(10, T0 + 31, 5, "update", label="truck", cls="tractor")])
    w.close()
    return path


@pytest.fixture
def typed_client(typed_db):
    c = _app(typed_db).test_client()
    assert _login(c).status_code == 302
    return c


def test_events_filter_by_classification_and_carry_it(typed_client):
    got = typed_client.get("/api/events", query_string={"classification": "pickup"}).json["events"]
    assert [e["seq"] for e in got] == [7, 6]
    assert all(e["classification"]["label"] == "pickup" and e["classification"]["votes"] == 2 for e in got)
    got = typed_client.get("/api/events", query_string={"classification": "car", "camera": "yard"}).json["events"]
    assert [e["seq"] for e in got] == [5]
    assert typed_client.get("/api/events?classification=bus").json["events"] == []
    # No decision: the field is absent, not null.
    first = typed_client.get("/api/events", query_string={"before": 2, "limit": 1}).json["events"][0]
    assert first["seq"] == 1 and "classification" not in first


def test_counts_by_classification_count_each_track_once_under_its_latest_type(typed_client):
    q = {"since": T0, "until": T0 + 60, "bucket": 20}
    data = typed_client.get("/api/counts", query_string={**q, "by": "classification"}).json
    assert data["by"] == "classification" and data["buckets"] == [T0, T0 + 20, T0 + 40]
    # Track 1 counts as pickup (not van), in the bucket of its `new`; track 4 has no type.
    assert data["series"] == {"car": [1, 1, 0], "pickup": [1, 0, 0], "tractor": [0, 1, 0]}
    data = typed_client.get("/api/counts", query_string={**q, "by": "classification", "camera": "gate"}).json
    assert data["series"] == {"car": [0, 1, 0], "pickup": [1, 0, 0], "tractor": [0, 1, 0]}
    # The default is unchanged: the detector's class, every new track.
    data = typed_client.get("/api/counts", query_string=q).json
    assert data["by"] == "label" and data["series"] == {"car": [2, 1, 0], "person": [1, 0, 0], "truck": [0, 1, 0]}
    assert typed_client.get("/api/counts", query_string={**q, "by": "label"}).json == data


def test_filters_list_the_classification_types(typed_db, typed_client):
    usual = ["car", "suv", "pickup", "van", "bus", "truck", "motorcycle", "bicycle", "emergency", "other"]
    assert typed_client.get("/api/filters").json["classifications"] == usual  # "tractor" is from 2023
    w = EventWriter(typed_db).start()  # a type of another model, seen today
    w.put([_typed(11, time.time(), 6, "update", cls="tractor"), _typed(12, time.time(), 7, "update", cls="van")])
    w.close()
    assert typed_client.get("/api/filters").json["classifications"] == usual + ["tractor"]


@pytest.mark.parametrize("query, message", [
    ("/api/events?classification=pick%20up", "classification: expected a type name of 1 to 32 letters"),
    ("/api/events?classification=car'--", "classification: expected a type name"),
    ("/api/events?classification=" + "x" * 33, "classification: expected a type name"),
    ("/api/counts?by=type", "by: must be one of label, classification, got 'type'"),
])
def test_a_malformed_classification_parameter_is_a_400_naming_it(typed_client, query, message):
    r = typed_client.get(query)
    assert r.status_code == 400 and message in r.json["error"]
