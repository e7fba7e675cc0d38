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
                         "Frames that could not be decoded, skipped", ["camera"])
FRAMES_DETECT_FAILED = Counter("appliance_frames_detect_failed_total",
                               "Frames skipped because the detector failed on them", ["camera"])
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
# Store: write failures, the low-disk guard, and latency from capture to commit
# (appliance/store/writer.py, appliance/store/disk.py).
STORE_WRITE_FAILURES = Counter("appliance_store_write_failures_total",
                               "SQLite transactions writing events that failed (and were retried)")
STORE_EVENTS_UNWRITTEN = Counter(
    "appliance_store_events_unwritten_total",
    "Events handed to the writer that were never written: given up at shutdown, or discarded "
    "from memory past the store's pending limit while writes failed")
STORE_DISK_STATE = Gauge("appliance_store_disk_state",
                         "1 for the data disk's current state: ok, low (under the reserve, pruning), "
                         "full (writes fail for lack of space)", ["state"])
STORE_EVENTS_PRUNED = Counter("appliance_store_events_pruned_total",
                              "Events deleted by the low-disk guard to keep the reserve free",
                              ["sent"])
CAPTURE_TO_COMMIT_SECONDS = Histogram(
    "appliance_capture_to_commit_seconds",
    "From the capture of a frame to the commit of the events it caused, once per frame with events",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 7.5, 10.0))
HEARTBEAT = Gauge("appliance_heartbeat_timestamp_seconds",
                  "Unix time a frame last left the tracker")
BUILD = Info("appliance_build", "Software and model versions")
MODEL_DRIFT = Gauge("appliance_model_drift", "Drift of detection scores and class mix from the "
                    "baseline taken after the model started (0..1)", ["camera", "model"])

# Web dashboard (web/): requests by route pattern (not path, to bound the label values).
WEB_REQUESTS = Counter("appliance_web_requests_total", "Dashboard and API requests served",
                       ["route", "code"])
WEB_LOGIN_FAILURES = Counter("appliance_web_login_failures_total", "Failed dashboard logins")
DISK_FREE_BYTES = Gauge("appliance_data_disk_free_bytes",
                        "Free bytes on the file system of the data directory (set when read)")

# MQTT uplink (appliance/uplink/, docs/mqtt.md).
UPLINK_CONNECTED = Gauge("appliance_uplink_connected", "1 while the uplink has a broker connection")
UPLINK_CONNECTS = Counter("appliance_uplink_connects_total", "Broker connections made")
UPLINK_CONNECT_FAILURES = Counter("appliance_uplink_connect_failures_total",
                                  "Broker connection attempts that failed or were refused")
UPLINK_EVENTS_SENT = Counter("appliance_uplink_events_sent_total",
                             "Events the broker acknowledged (PUBACK), duplicates included")
UPLINK_SENT_BYTES = Counter("appliance_uplink_sent_bytes_total", "MQTT payload bytes published")
UPLINK_EVENTS_DROPPED = Counter("appliance_uplink_events_dropped_total",
                                "Unsent events deleted by backlog limits", ["reason"])
UPLINK_BACKLOG_ROWS = Gauge("appliance_uplink_backlog_rows", "Events stored and not yet sent")
UPLINK_OLDEST_UNSENT_AGE = Gauge("appliance_uplink_oldest_unsent_age_seconds",
                                 "Age of the oldest unsent event; 0 when none")
UPLINK_COMMANDS = Counter("appliance_uplink_commands_total", "Commands received", ["command", "ok"])

# Camera supervision, adaptive stride, power and thermal (capture/supervisor.py, control/).
CAMERA_STATE = Gauge("appliance_camera_state",
                     "1 for the camera's current state (connecting, streaming, stalled, failed)",
                     ["camera", "state"])
CAMERA_RECONNECTS = Counter("appliance_camera_reconnects_total",
                            "Connections to a live camera that delivered frames again after a loss",
                            ["camera"])
CAMERA_CONNECT_ATTEMPTS = Counter("appliance_camera_connect_attempts_total",
                                  "Connection attempts to a live camera, failed ones included", ["camera"])
FRAMES_LATE = Counter("appliance_frames_late_total",
                      "Frames older than cameras[].late_after_s when the detector took them", ["camera"])
FRAMES_SKIPPED = Counter("appliance_frames_skipped_total",
                         "Frames not sent to the detector because of the adaptive stride", ["camera"])
ADAPTIVE_STRIDE = Gauge("appliance_adaptive_stride", "Detection stride: every n-th frame is detected",
                        ["camera"])
ADAPTIVE_INPUT_SIZE = Gauge("appliance_adaptive_input_size",
                            "Detector input width a camera's frames are detected at (models with input_sizes)",
                            ["camera"])
ADAPTIVE_CHANGES = Counter("appliance_adaptive_changes_total", "Input size and stride changes by direction",
                           ["camera", "direction"])
INPUT_FPS = Gauge("appliance_input_fps",
                  "Frames per second taken from the camera (detected or skipped by stride), last 5 s",
                  ["camera"])
TEMPERATURE = Gauge("appliance_temperature_celsius", "Thermal zone temperature", ["zone"])
POWER_THROTTLED = Gauge("appliance_power_throttled",
                        "1 while the platform reports throttling or under-voltage now")
POWER_MODE = Gauge("appliance_power_mode", "1 for the current power mode", ["mode"])
POWER_MODE_CHANGES = Counter("appliance_power_mode_changes_total",
                             "Power mode changes made (or, in a dry run, that would have been made)",
                             ["reason"])
POWER_RAIL_WATTS = Gauge("appliance_power_rail_watts", "Power drawn on a monitored rail", ["rail"])

# Classification of tracked objects (appliance/classify/).
CLASSIFY_SECONDS = Histogram("appliance_classify_seconds", "Classifier time per crop: preprocess and inference",
                             buckets=_BUCKETS)
CLASSIFY_CROPS = Counter("appliance_classify_crops_total", "Crops classified")
CLASSIFY_DROPPED = Counter("appliance_classify_dropped_total",
                           "Crop requests not classified: over the budget, pushed out of the full queue, "
                           "or no usable crop", ["reason"])
CLASSIFY_DECISION_SECONDS = Histogram(
    "appliance_classify_decision_seconds",
    "From a track's first confirmed frame to the frame its type was decided (capture times; 0 when "
    "decided before it was confirmed)",
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0))
CLASSIFY_TRACKS = Counter("appliance_classify_tracks_total",
                          "Tracks of classified classes at their end, by whether their type was decided",
                          ["outcome"])

# Snapshots of the tracks worth a look (appliance/events/snapshots.py) and their upload.
SNAPSHOTS_SAVED = Counter("appliance_snapshots_saved_total",
                          "Track snapshots written, by why the policy kept them (low_detection, "
                          "low_classification, undecided, all)", ["reason"])
SNAPSHOTS_REMOVED = Counter("appliance_snapshots_removed_total",
                            "Snapshots deleted, oldest first, to keep the folder under snapshots.max_mb")
SNAPSHOTS_FAILED = Counter("appliance_snapshots_failed_total",
                           "Snapshots not written: the writer's queue was full, or encoding or the disk failed",
                           ["reason"])
SNAPSHOTS_BYTES = Gauge("appliance_snapshots_bytes", "Bytes of the snapshot files kept on the device")
UPLINK_SNAPSHOTS_SENT = Counter("appliance_uplink_snapshots_sent_total",
                                "Snapshots the broker acknowledged (PUBACK), duplicates included")
UPLINK_SNAPSHOTS_MISSING = Counter("appliance_uplink_snapshots_missing_total",
                                   "Snapshots named by a sent end event whose file was gone (removed by the "
                                   "quota, or never written): skipped")
