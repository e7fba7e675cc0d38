"""Snapshots to the broker: the JPEG an `end` event names (appliance/events/snapshots.py),
published on `<prefix>/<id>/snapshots/<event id>`.

An `end` event's PUBACK queues its snapshot in SQLite (the outbox's snapshot_outbox), so
a snapshot never reaches the broker before its event. The uplink calls `fill` only while
no unsent event waits; snapshots go in event order, at most WINDOW unacknowledged, and
only from the bandwidth cap's spare allowance. A file that is gone (the quota removed it,
a power cut left it empty) is skipped and counted `missing`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from appliance import metrics
from appliance.events.snapshots import is_snapshot_name
from appliance.uplink.link import Link
from appliance.uplink.messages import Topics
from appliance.uplink.outbox import Outbox
from appliance.uplink.pacing import TokenBucket

log = logging.getLogger(__name__)

WINDOW = 2  # snapshot messages published and not yet acknowledged


class SnapshotSender:
    def __init__(self, outbox: Outbox, folder: Path, topics: Topics, bucket: TokenBucket) -> None:
        self.outbox, self.folder, self.topics, self.bucket = outbox, folder, topics, bucket
        self.inflight: dict[int, int] = {}  # mid -> the end event's seq
        self.cursor = 0  # the last seq published or skipped on this connection
        self.sent = self.missing = 0

    def restart(self) -> None:
        """A new connection, or a resync: read the queue again from its first pending row.
        (Acks still due for what was in flight must not mark anything.)"""
        self.inflight.clear()
        self.cursor = 0

    def fill(self, link: Link) -> float:
        """Publish while the window has room; seconds the bandwidth cap asks to wait
        (0.0 when it asks nothing)."""
        while len(self.inflight) < WINDOW:
            pending = self.outbox.pending_snapshots(self.cursor, 1)
            if not pending:
                break
            seq, event_id, name = pending[0]
            path = self.folder / name
            try:
                if not is_snapshot_name(name):
                    raise FileNotFoundError(name)
                size = path.stat().st_size
                wait = self.bucket.wait_full_s(size)
                if wait > 0:
                    return wait
                data = path.read_bytes()
                if not data:
                    raise FileNotFoundError(name)  # a write a power cut cut short
            except OSError as e:
                self.cursor = seq
                self.outbox.snapshots_done([seq], "missing")
                self.missing += 1
                metrics.UPLINK_SNAPSHOTS_MISSING.inc()
                log.debug("uplink: snapshot of %s skipped: %s", event_id,
                          "file gone" if isinstance(e, FileNotFoundError) else e)
                continue
            mid = link.publish(self.topics.snapshot_of(event_id), data)
            if mid is None:
                break
            self.inflight[mid] = seq
            self.cursor = seq
            self.bucket.spend(len(data))
            metrics.UPLINK_SENT_BYTES.inc(len(data))
        return 0.0

    def acked(self, seqs: list[int]) -> None:
        """Their PUBACKs came (`inflight.pop(mid)` gave the seqs)."""
        self.outbox.snapshots_done(seqs, "sent")
        self.sent += len(seqs)
        metrics.UPLINK_SNAPSHOTS_SENT.inc(len(seqs))
