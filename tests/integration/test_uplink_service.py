"""The Uplink service in-process against a real mosquitto, over a backlog in a real SQLite
file (no camera or model: these are about sending). The full appliance is in
test_uplink_appliance.py and test_uplink_faults.py."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from prometheus_client import REGISTRY

from tests.uplink_util import check_delivery, schema, seed_events, stored, uplinks

DEVICE = "unit-1"


@pytest.fixture
def make_uplink(data_dir, mqtt_broker):
    with uplinks(data_dir, mqtt_broker.port, DEVICE, drain_timeout_s=20) as make:
        yield make


def test_alerts_go_first_in_batches_of_one_priority(data_dir, mqtt_broker, sub, make_uplink):
    seed_events(data_dir, DEVICE, 400)
    up = make_uplink(batch_size=10, max_inflight=3)
    sub.wait_for(lambda: len({e["id"] for e in sub.events()}) >= 400, 30, "400 events")
    up.stop()

    rows = stored(data_dir)
    stats = check_delivery(sub.events(), rows)
    assert stats["duplicates"] == 0  # nothing went wrong, so nothing was sent twice
    assert all(r["_sent"] for r in rows)
    prio = {r["id"]: r["_priority"] for r in rows}
    validator = schema("mqtt-events")
    for m in sub.on("/events"):
        body = json.loads(m.payload)
        validator.validate(body)
        assert 1 <= len(body["events"]) <= 10
        assert len({prio[e["id"]] for e in body["events"]}) == 1  # one priority per message
    # The whole backlog was there at start: every alert (new, end) before any update.
    order = [prio[e["id"]] for e in sub.events()]
    assert order == sorted(order) and order.count(0) == 200 and order.count(1) == 200


def test_window_is_bounded_while_the_broker_does_not_acknowledge(data_dir, mqtt_broker, sub, make_uplink):
    up = make_uplink(batch_size=5, max_inflight=4)
    sub.wait_for(lambda: up.status()["state"] == "connected", 10, "connection")
    os.kill(mqtt_broker.proc.pid, signal.SIGSTOP)  # no PUBACK comes back
    try:
        seed_events(data_dir, DEVICE, 100)
        sub.wait_for(lambda: up.status()["inflight"] == 4, 30, "a full window")
        time.sleep(0.5)  # room to overshoot, were the window not enforced
        assert up.status()["inflight"] == 4  # 4 messages of 5 events, then it waits
    finally:
        os.kill(mqtt_broker.proc.pid, signal.SIGCONT)
    sub.wait_for(lambda: len({e["id"] for e in sub.events()}) >= 100, 20, "all 100 events")
    up.stop()
    check_delivery(sub.events(), stored(data_dir))


class StoppedClock:
    """The bandwidth cap's clock: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_bandwidth_cap_paces_the_drain(data_dir, mqtt_broker, sub, make_uplink):
    # The cap runs on the test's clock, so what may go out is exact, however fast or slow
    # this machine is: a second's allowance at once, then one second's worth per second
    # the clock moves, plus at most the one message that overdraws the bucket.
    seed_events(data_dir, DEVICE, 600)
    cap = 60_000
    clock = StoppedClock()
    up = make_uplink(batch_size=10, bandwidth_bytes_per_s=cap, pacing_clock=clock)

    def event_bytes() -> int:
        return sum(len(m.payload) for m in sub.on("/events"))

    def all_arrived() -> bool:
        return len({e["id"] for e in sub.events()}) >= 600

    checks: list[tuple[float, int]] = []  # (seconds the clock moved, bytes received by then)
    sub.wait_for(lambda: event_bytes() >= cap // 2, 30, "the first second's allowance")
    time.sleep(1.0)  # the clock stands still: an uncapped uplink would send everything now
    checks.append((0.0, event_bytes()))
    assert not all_arrived()
    moved = 0.0
    while not all_arrived():
        before = event_bytes()
        clock.t += 0.5
        moved += 0.5
        sub.wait_for(lambda before=before: event_bytes() > before or all_arrived(), 30,
                     "more events once the clock moved")
        checks.append((moved, event_bytes()))
        assert moved <= 60, "the drain does not end"  # 600 events are a few seconds' worth
    up.stop()

    largest = max(len(m.payload) for m in sub.on("/events"))
    for seconds, sent in checks:
        assert sent <= cap * (1 + seconds) + largest + 1, (seconds, sent, checks)
    total = checks[-1][1]
    assert total > 2 * cap  # more than the allowance: the clock had to move for the rest
    print(f"\n{total} bytes of events over {moved:g} s of the cap's clock at {cap} B/s")
    rows = stored(data_dir)
    check_delivery(sub.events(), rows)  # all of them, in order
    assert all(r["_sent"] for r in rows)


def test_backlog_over_the_hard_cap_drops_oldest_and_says_so(data_dir, mqtt_broker, sub, make_uplink):
    seed_events(data_dir, DEVICE, 100)
    before = REGISTRY.get_sample_value("appliance_uplink_events_dropped_total", {"reason": "max_rows"}) or 0
    up = make_uplink(backlog={"max_rows": 60})
    sub.wait_for(lambda: len(sub.events()) >= 61, 20, "the notice and 60 events")
    up.stop()
    received = sub.events()
    notice = received[0]  # notices go before anything else
    schema("mqtt-events").validate({"schema": 1, "device": DEVICE, "events": [notice]})
    assert notice["type"] == "dropped" and notice["reason"] == "max_rows"
    assert (notice["count"], notice["first_seq"], notice["last_seq"]) == (40, 1, 40)
    assert notice["id"] == f"{DEVICE}:dropped:1"
    rows = stored(data_dir)
    assert [r["seq"] for r in rows] == list(range(41, 101))
    check_delivery(received, rows)
    after = REGISTRY.get_sample_value("appliance_uplink_events_dropped_total", {"reason": "max_rows"})
    assert after - before == 40
    assert up.status()["events_dropped"] == 40


def test_resync_sends_again_from_since(data_dir, mqtt_broker, sub, make_uplink):
    t0 = time.time() - 3600
    seed_events(data_dir, DEVICE, 50, ts=t0)
    up = make_uplink()
    sub.wait_for(lambda: len(sub.events()) >= 50, 20, "50 events")
    since = t0 + 30 * 0.001  # ts of seq 31
    sub.client.publish(f"t/{DEVICE}/cmd/resync", json.dumps({"since": since, "correlation_id": "r1"}), qos=1)
    sub.wait_for(lambda: len(sub.events()) >= 70, 20, "20 events again")
    up.stop()
    result = json.loads(sub.on("/cmd/result")[0].payload)
    schema("mqtt-command-result").validate(result)
    assert result["ok"] and result["correlation_id"] == "r1" and result["result"]["requeued"] == 20
    again = [e["seq"] for e in sub.events()[50:]]
    assert sorted(again) == list(range(31, 51))
    check_delivery(sub.events(), stored(data_dir))
