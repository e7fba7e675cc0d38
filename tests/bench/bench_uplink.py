"""Uplink drain against a naive publisher, into one local mosquitto, in one run.

backlog:   100,000 events in a real SQLite file (the pipeline's schema and row shape)
uplink:    the Uplink service (appliance/uplink/) with the default config: batches,
           a window of unacknowledged messages, sent-marks committed per round of acks
naive:     for each event (the same 100,000 by default), in seq order: one publish() of a one-event message, then
           wait_for_publish() (its PUBACK), then mark it sent (UPDATE, commit)

A subscriber in a separate process (so it takes no GIL from the publishers) counts
distinct event ids; a drain ends when the last id has arrived there. RSS growth is the
bench process's resident set after the uplink's drain minus before it, and the peak.
Targets on the development machine: uplink >= 10x naive, >= 5,000 events/s, RSS
growth < 50 MB.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from appliance import paths
from appliance.config import from_dict
from appliance.store.db import open_db
from appliance.uplink.messages import events_message
from appliance.uplink.outbox import Outbox
from appliance.uplink.service import Uplink
from tests.mqtt_broker import Mosquitto
from tests.uplink_util import seed_events


def _subscriber(port: int, conn) -> None:
    """Child process: count distinct ids per device; report when a device has all it should."""
    seen: dict[str, set[str]] = {}
    expect: dict[str, int] = {}
    lock = threading.Lock()

    def check(dev: str) -> None:
        if dev in expect and len(seen.get(dev, ())) >= expect[dev]:
            conn.send(("done", dev, time.time(), len(seen[dev])))
            del expect[dev]

    def on_message(client, userdata, msg):
        body = json.loads(msg.payload)
        with lock:
            ids = seen.setdefault(body["device"], set())
            ids.update(e["id"] for e in body["events"])
            check(body["device"])

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe("bench/+/events", qos=1)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter")
    c.on_message, c.on_connect = on_message, on_connect
    c.on_subscribe = lambda *a: conn.send(("ready",))
    c.connect("127.0.0.1", port)
    c.loop_start()
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            break
        with lock:
            expect[msg[1]] = msg[2]
            check(msg[1])
    c.disconnect()
    c.loop_stop()


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident set (VmRSS) or its peak since the last reset (VmHWM), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> bool:
    try:  # Linux: "5" resets the peak resident set (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _wait_done(conn, device: str, timeout: float) -> tuple[float, int]:
    if not conn.poll(timeout):
        raise SystemExit(f"bench: {device}: the subscriber did not get every event within {timeout} s")
    kind, dev, t, n = conn.recv()
    assert kind == "done" and dev == device
    return t, n


def run_uplink(data: Path, port: int, n: int, conn, batch: int, inflight: int) -> dict:
    cfg = from_dict({"device": {"id": "bench-uplink"}, "uplink": {
        "enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "bench",
        "batch_size": batch, "max_inflight": inflight}})
    up = Uplink(cfg, data)
    conn.send(("expect", "bench-uplink", n))
    peak_reset = _reset_peak()
    rss0 = _rss_mb()
    t0 = time.time()
    up.start()
    t_last, got = _wait_done(conn, "bench-uplink", 600)
    while up.events_sent < n:  # every row marked sent as well
        time.sleep(0.01)
    t_marked = time.time()
    rss1 = _rss_mb()
    peak = _rss_mb("VmHWM")
    up.stop()
    return {"events": got, "s": t_last - t0, "marked_s": t_marked - t0, "rss_growth": rss1 - rss0,
            "peak_growth": (peak - rss0) if peak_reset else None}


def run_naive(data: Path, port: int, n: int, conn) -> dict:
    box = Outbox(paths.db_path(data))
    rows = box.conn.execute("SELECT seq, payload FROM events ORDER BY seq LIMIT ?", [n]).fetchall()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-naive")
    c.connect("127.0.0.1", port)
    c.loop_start()
    conn.send(("expect", "bench-naive", n))
    t0 = time.time()
    for seq, payload in rows:
        info = c.publish("bench/bench-naive/events", events_message("bench-naive", [payload]), qos=1)
        info.wait_for_publish()
        box.mark_sent([seq])
    t_last, got = _wait_done(conn, "bench-naive", 600)
    c.disconnect()
    c.loop_stop()
    box.close()
    return {"events": got, "s": max(t_last, time.time()) - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench uplink", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="backlog drained by the uplink")
    ap.add_argument("--naive-events", type=int,
                    help="events the naive publisher sends (default: as many as the uplink; a smaller "
                         "sample is quicker, and its rate is what is compared)")
    ap.add_argument("--batch-size", type=int, default=50, help="uplink.batch_size (default: the config default)")
    ap.add_argument("--max-inflight", type=int, default=10, help="uplink.max_inflight (default: the config default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.naive_events = args.naive_events or args.events

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        broker = Mosquitto(tmp_path / "broker").start()
        parent, child = mp.Pipe()
        counter = mp.get_context("spawn").Process(target=_subscriber, args=(broker.port, child), daemon=True)
        counter.start()
        try:
            if not parent.poll(30):
                raise SystemExit("bench: the subscriber did not connect")
            parent.recv()
            a, b = tmp_path / "a", tmp_path / "b"
            t = time.time()
            seed_events(a, "bench-uplink", args.events)
            seed_events(b, "bench-naive", args.naive_events)
            fill_s = time.time() - t
            size = paths.db_path(a).stat().st_size
            open_db(paths.db_path(a)).conn.close()

            ours = run_uplink(a, broker.port, args.events, parent, args.batch_size, args.max_inflight)
            naive = run_naive(b, broker.port, args.naive_events, parent)
        finally:
            parent.send(("quit",))
            counter.join(10)
            broker.close()

    ours_rate, naive_rate = ours["events"] / ours["s"], naive["events"] / naive["s"]
    ratio = ours_rate / naive_rate
    peak = f", peak +{ours['peak_growth']:.1f} MB" if ours["peak_growth"] is not None else ""
    print(f"backlog: {args.events} events in SQLite ({size / 1e6:.1f} MB, filled in {fill_s:.1f} s); "
          f"mosquitto on 127.0.0.1; subscriber in its own process")
    print(f"uplink (batch_size {args.batch_size}, max_inflight {args.max_inflight}): {ours['events']} events "
          f"in {ours['s']:.2f} s = {ours_rate:,.0f} events/s (all marked sent after {ours['marked_s']:.2f} s)")
    print(f"naive (publish + wait_for_publish + mark sent, per event; {args.naive_events} events): "
          f"{naive['events']} events in {naive['s']:.2f} s = {naive_rate:,.0f} events/s")
    print(f"ratio uplink/naive: {ratio:.1f}x   (target >= 10)")
    print(f"uplink rate: {ours_rate:,.0f} events/s   (target >= 5,000)")
    print(f"RSS growth during the uplink drain: {ours['rss_growth']:+.1f} MB{peak}   (target < 50 MB)")
    ok = ratio >= 10 and ours_rate >= 5000 and ours["rss_growth"] < 50
    print("targets: " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
