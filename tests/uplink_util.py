"""Helpers for the uplink tests: a backlog of events in a real SQLite file, the real
appliance as a subprocess, the JSON Schemas, and the delivery check every fault run makes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import yaml

from appliance import paths
from appliance.config import from_dict
from appliance.events.lifecycle import Event
from appliance.store.db import open_db
from appliance.store.writer import event_row

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schemas"
TYPES = ("new", "update", "update", "end")  # a mix of alerts (new, end) and routine updates


@contextmanager
def uplinks(data_dir: Path, port: int, device: str, drain_timeout_s: float):
    """make(**uplink keys): started in-process Uplink services on the broker at `port`
    (topic prefix "t"), all stopped on leaving."""
    from appliance.uplink.service import Uplink

    made: list[Uplink] = []

    def make(pacing_clock=time.monotonic, **uplink) -> Uplink:
        cfg = from_dict({"device": {"id": device}, "uplink": {
            "enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "t",
            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "drain_timeout_s": drain_timeout_s, **uplink}})
        made.append(Uplink(cfg, data_dir, pacing_clock=pacing_clock))
        made[-1].start()
        return made[-1]

    try:
        yield make
    finally:
        for up in made:
            up.stop()


def schema(name: str) -> jsonschema.protocols.Validator:
    s = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    return jsonschema.Draft202012Validator(s)


def seed_events(data_dir: Path, device: str, n: int, start_seq: int = 1, ts: float | None = None) -> None:
    """n events as the pipeline stores them (Event.to_json through the writer's row shape)."""
    db = open_db(paths.db_path(data_dir))
    t0 = time.time() if ts is None else ts
    rows = []
    for i in range(n):
        seq = start_seq + i
        e = Event(id=f"{device}:{seq}", seq=seq, type=TYPES[i % len(TYPES)], device=device, camera="seed",
                  track_id=1000 + i // 4, label="person", score=0.9, box=[10.0, 20.0, 110.0, 220.0],
                  ts=t0 + i * 0.001, first_seen=t0, frame_seq=i)
        rows.append(event_row(e))
    with db.conn:
        db["events"].insert_all(rows, batch_size=500)
    db.conn.close()


def stored(data_dir: Path) -> list[dict]:
    """Every stored event with its priority and whether it is marked sent, by seq."""
    conn = sqlite3.connect(paths.db_path(data_dir))
    rows = conn.execute("SELECT payload, priority, sent_at FROM events ORDER BY seq").fetchall()
    conn.close()
    return [{**json.loads(p), "_priority": prio, "_sent": s is not None} for p, prio, s in rows]


def check_delivery(received: list[dict], stored_events: list[dict]) -> dict[str, int]:
    """What every fault run checks: 0 lost, nothing unknown, and per device and priority
    class the first deliveries are exactly the stored events in seq order (so a
    duplicate can only be of an id already delivered, and nothing overtakes)."""
    track = [e for e in received if e["type"] != "dropped"]
    got = {e["id"] for e in track}
    want = {e["id"] for e in stored_events}
    lost = sorted(want - got, key=lambda i: int(i.rsplit(":", 1)[1]))
    assert not lost, f"{len(lost)} events lost, first {lost[:10]}"
    assert got <= want, f"unknown ids delivered: {sorted(got - want)[:10]}"
    priority = {e["id"]: e["_priority"] for e in stored_events}
    firsts: dict[tuple, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for e in track:
        if e["id"] not in seen:
            seen.add(e["id"])
            firsts[(e["device"], priority[e["id"]])].append(e["seq"])
    for (device, prio), seqs in firsts.items():
        expected = sorted(e["seq"] for e in stored_events if e["device"] == device and e["_priority"] == prio)
        assert seqs == expected, f"device {device} priority {prio}: first deliveries out of order " \
                                 f"at {next(i for i, (a, b) in enumerate(zip(seqs, expected)) if a != b)}"
    return {"delivered": len(track), "distinct": len(got), "duplicates": len(track) - len(got)}


def write_config(path: Path, port: int, device: str = "dev1", camera: dict | None = None,
                 uplink: dict | None = None, **sections) -> Path:
    cfg = {"device": {"id": device},
           "cameras": [camera or {"id": "demo", "source": "asset:vtest.avi"}],
           "log": {"stats_interval_s": 1},
           "uplink": {"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "test",
                      "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "stats_interval_s": 1,
                      **(uplink or {})},
           **sections}
    path.write_text(yaml.safe_dump(cfg))
    return path


class Appliance:
    """`appliance run` in a subprocess; its log goes to a file so it can be read while it runs."""

    def __init__(self, config: Path, data_dir: Path, *args: str, log: Path):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "run", "--config", str(config),
                 "--data-dir", str(data_dir), *args],
                stdout=out, stderr=out, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"appliance did not finish within {timeout} s:\n{self.text()[-3000:]}") from None

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)
