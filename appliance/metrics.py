"""Prometheus metrics, defined once for the process (prometheus-client's default registry).

Stages observe into these as frames pass; the web app serves them at /metrics. Names
carry units, and counters end in _total (checked with `promtool check metrics`).
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

# Latency buckets from 1 ms to 2.5 s: decode and tracking sit at the low end, inference
# on a Pi or a slow model at the high end.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

FRAMES = Counter("appliance_frames_total", "Frames that went through the tracker", ["camera"])
FRAMES_DROPPED = Counter("appliance_frames_dropped_total",
                         "Frames dropped because the detector was busy (latest wins)", ["camera"])
FRAMES_CORRUPT = Counter("appliance_frames_corrupt_total",
                         "Frames that could not be decoded or processed, skipped", ["camera"])
DECODE_SECONDS = Histogram("appliance_decode_seconds", "Time to read and decode one frame",
                           ["camera"], buckets=_BUCKETS)
INFERENCE_SECONDS = Histogram("appliance_inference_seconds",
                              "Detector time per frame: preprocess, inference, decode of outputs",
                              ["camera"], buckets=_BUCKETS)
TRACKING_SECONDS = Histogram("appliance_tracking_seconds",
                             "Tracker and event lifecycle time per frame", ["camera"], buckets=_BUCKETS)
STORE_SECONDS = Histogram("appliance_store_write_seconds",
                          "Time of one SQLite transaction writing a batch of events", buckets=_BUCKETS)
FPS = Gauge("appliance_fps", "Frames per second through the tracker, over the last 5 s", ["camera"])
LIVE_TRACKS = Gauge("appliance_live_tracks", "Tracks currently reported", ["camera"])
QUEUE_DEPTH = Gauge("appliance_queue_depth", "Items waiting between stages", ["queue"])
EVENTS = Counter("appliance_events_total", "Events produced", ["type"])
EVENTS_STORED = Counter("appliance_events_stored_total", "Events committed to SQLite")
HEARTBEAT = Gauge("appliance_heartbeat_timestamp_seconds",
                  "Unix time a frame last left the tracker")
BUILD = Info("appliance_build", "Software and model versions")
