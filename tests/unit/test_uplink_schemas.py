"""The payload builders and the stored event records against docs/schemas/ (real broker
messages are checked in tests/integration/test_uplink_*.py)."""
from __future__ import annotations

import json

import jsonschema
import pytest

from appliance.events.lifecycle import Event
from appliance.events.state import StateEvent
from appliance.uplink import messages
from tests.uplink_util import SCHEMAS, schema


def test_schemas_are_valid_json_schemas():
    names = sorted(p.name for p in SCHEMAS.glob("*.json"))
    assert names == ["mqtt-analytics.v1.json", "mqtt-command-result.v1.json", "mqtt-command.v1.json",
                     "mqtt-counts.v1.json", "mqtt-events.v1.json", "mqtt-selftest.v1.json", "mqtt-stats.v1.json",
                     "mqtt-status.v1.json"]
    for p in SCHEMAS.glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(p.read_text()))


def test_every_kind_of_stored_event_fits_the_events_schema():
    track = Event(id="g:1", seq=1, type="new", device="g", camera="north", track_id=3, label="person",
                  score=0.8, box=[1.0, 2.0, 3.0, 4.0], ts=1.5, first_seen=1.5, frame_seq=9).to_json()
    state = StateEvent("g:2", 2, "power", "g", "", "MAXN", "5W", "thermal: 83.5 C >= 80 C", 2.0,
                       {"temperatures_c": {"cpu": 83.5}}).to_json()
    body = json.loads(messages.events_message("g", [track, state]))
    schema("mqtt-events").validate(body)
    body["events"][0]["type"] = "moved"  # not a type the contract knows
    with pytest.raises(jsonschema.ValidationError):
        schema("mqtt-events").validate(body)


def test_status_stats_and_results_fit_their_schemas():
    v = schema("mqtt-status")
    v.validate(json.loads(messages.offline_status("g")))
    v.validate(json.loads(messages.online_status("g", "0.1.0", None)))
    v.validate(json.loads(messages.online_status("g", "0.1.0", {"name": "m", "version": "1", "backend": "litert",
                                                               "device": "cpu"})))
    uplink = {"backlog_rows": 3, "oldest_unsent_age_s": 1.5, "events_sent": 10, "events_dropped": 0}
    disk = {"db_bytes": 1, "free_bytes": 2, "total_bytes": 3}
    pipeline = {"uptime_s": 5.0, "cameras": {"a": {"fps": 9.5, "frames": 10, "dropped": 0, "live_tracks": 1,
                                                   "inference_ms_p50": 9.0}}}
    schema("mqtt-stats").validate(json.loads(messages.stats_message("g", pipeline, uplink, disk)))
    schema("mqtt-stats").validate(json.loads(messages.stats_message("g", None, uplink, disk)))
    r = schema("mqtt-command-result")
    r.validate(json.loads(messages.command_result("g", "ping", "x", True, {"pong": True})))
    r.validate(json.loads(messages.command_result("g", "nope", None, False, error="unknown command")))
    with pytest.raises(jsonschema.ValidationError):  # ok with an error is not a valid result
        r.validate({**json.loads(messages.command_result("g", "ping", 1, True, {})), "error": "x"})


_PICKUP = {"label": "pickup", "score": 0.82, "votes": 3, "attempts": 4, "model": "efficientnet-lite0",
           "version": "1"}


def _track_event(**kw) -> str:
    return Event(id="g:1", seq=1, type="update", device="g", camera="north", track_id=3, label="car",
                 score=0.8, box=[1.0, 2.0, 3.0, 4.0], ts=1.5, first_seen=1.5, frame_seq=9, **kw).to_json()


def test_classification_is_optional_in_schema_1():
    v = schema("mqtt-events")
    old = _track_event()
    assert "classification" not in json.loads(old)  # nothing decided: absent, as before
    v.validate(json.loads(messages.events_message("g", [old])))
    # A schema-1 event of a release before the classifier, exactly as it was stored then.
    v.validate({"schema": 1, "device": "g", "events": [
        {"id": "g:7", "seq": 7, "type": "end", "device": "g", "camera": "north", "track_id": 3,
         "label": "car", "score": 0.8, "box": [1.0, 2.0, 3.0, 4.0], "ts": 1.5, "first_seen": 1.0,
         "frame_seq": 9, "schema": 1}]})
    new = _track_event(classification=_PICKUP)
    body = json.loads(messages.events_message("g", [old, new]))
    assert body["events"][1]["classification"] == _PICKUP
    v.validate(body)


@pytest.mark.parametrize("bad", [
    None,  # absent means undecided; null is not a value
    "pickup",
    {k: v for k, v in _PICKUP.items() if k != "label"},
    {**_PICKUP, "label": ""},
    {**_PICKUP, "score": 1.5},
    {**_PICKUP, "votes": "3"},
    {**_PICKUP, "attempts": 0},
    {**_PICKUP, "model": 7},
    {**_PICKUP, "colour": "red"},
])
def test_a_malformed_classification_is_rejected(bad):
    body = json.loads(messages.events_message("g", [_track_event()]))
    body["events"][0]["classification"] = bad
    with pytest.raises(jsonschema.ValidationError):
        schema("mqtt-events").validate(body)
