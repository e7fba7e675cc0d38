"""The disk state (appliance/store/disk.py, status["disk"]) where it is shown: /healthz,
/api/status (the dashboard's health panel) and the MQTT stats message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.store.db import open_db
from appliance.uplink import messages
from web import create_app, health


class FakeStatus:
    def __init__(self, disk: dict | None):
        self.values = {"running": True, "heartbeat_age_s": 0.2, "uptime_s": 12.0, "events_stored": 0,
                       "model": {"name": "m", "version": "1", "backend": "litert", "device": "cpu"},
                       "queue_depth": {"detect_to_track": 0, "store": 0}, "cameras": {}, "services": {}}
        if disk is not None:
            self.values["disk"] = disk

    def status(self):
        return dict(self.values)


def _disk(state: str, free: int = 1000, error: str | None = None) -> dict:
    return {"state": state, "free_bytes": free, "reserve_bytes": 64 * 2**20, "total_bytes": 10**9,
            "fs_free_bytes": free, "pruned_events": 7, "pruned_unsent": 0, "error": error}


@pytest.fixture
def app_for(tmp_path: Path):
    db = tmp_path / "appliance.db"
    open_db(db).conn.close()

    def make(disk: dict | None):
        cfg = Config()
        cfg.device.id = "dev"
        app = create_app(cfg, FakeStatus(disk), db)  # no password: local only, no login
        app.config["TESTING"] = True
        return app.test_client()
    return make


def test_healthz_fails_with_the_reason_when_the_disk_is_full(app_for):
    r = app_for(_disk("full", free=0, error="database or disk is full")).get("/healthz")
    assert r.status_code == 503 and r.json["status"] == "unhealthy"
    assert r.json["reason"].startswith("disk full: events cannot be written to the database")
    assert "database or disk is full" in r.json["reason"] and "0 bytes free" in r.json["reason"]


@pytest.mark.parametrize("disk", [_disk("ok"), _disk("low"), None])
def test_healthz_is_ok_while_the_disk_is_ok_or_low_or_not_reported(app_for, disk):
    r = app_for(disk).get("/healthz")
    assert r.status_code == 200 and r.json["reason"] == "ok"


def test_api_status_joins_the_disk_state_with_the_hosts_figures(app_for):
    s = app_for(_disk("low", free=123)).get("/api/status").json
    d = s["disk"]
    assert d["state"] == "low" and d["reserve_bytes"] == 64 * 2**20 and d["pruned_events"] == 7
    assert 0 <= d["used_percent"] <= 100 and d["path"]  # the host's, fresh
    assert d["free_bytes"] != 123 or d["fs_free_bytes"] == 123  # the host's free wins
    assert s["alive"] is True and s["health"] == "ok"
    s = app_for(_disk("full", free=0)).get("/api/status").json
    assert s["disk"]["state"] == "full" and s["alive"] is False and s["health"].startswith("disk full")


def test_api_status_without_a_disk_state_is_as_before(app_for):
    d = app_for(None).get("/api/status").json["disk"]
    assert "state" not in d and d["used_percent"] >= 0


def test_liveness_reports_stopped_before_the_disk():
    status = {"running": False, "heartbeat_age_s": 0.1, "disk": _disk("full")}
    assert health.liveness(status, 10.0) == (False, "stopped")


def test_stats_message_carries_the_disk_state_and_reserve():
    uplink = {"backlog_rows": 3, "oldest_unsent_age_s": 1.5, "events_sent": 10, "events_dropped": 0}
    host = {"db_bytes": 4096, "free_bytes": 10_000, "total_bytes": 100_000}
    msg = json.loads(messages.stats_message("g", {"uptime_s": 1.0, "cameras": {}, "disk": _disk("low")},
                                            uplink, host))
    assert msg["disk"] == {**host, "state": "low", "reserve_bytes": 64 * 2**20}
    msg = json.loads(messages.stats_message("g", {"uptime_s": 1.0, "cameras": {}}, uplink, host))
    assert msg["disk"] == host  # no guard in the status: as before
    assert json.loads(messages.stats_message("g", None, uplink, host))["disk"] == host
