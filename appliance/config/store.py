"""`store`: the SQLite writer."""
from __future__ import annotations

from appliance.config.base import Section, key


class StoreConfig(Section):
    batch_size: int = key(200, lo=1, hi=100_000, doc="most events per SQLite transaction")
    flush_interval_s: float = key(0.5, lo=0.01, hi=60.0, doc="longest an event waits before it is written")
    disk_reserve_mb: float = key(
        64.0, lo=0.0, hi=1_000_000.0,
        doc="free space kept on the data directory's file system: under it the oldest events are "
            "deleted (sent ones first when the uplink is on), counted and announced; 0: watch and "
            "report only. At most a quarter of the file system")
    disk_check_interval_s: float = key(5.0, lo=0.05, hi=3600.0,
                                       doc="seconds between free-space checks; under twice the reserve, "
                                           "every write is checked")
    shutdown_timeout_s: float = key(10.0, lo=0.0, hi=600.0,
                                    doc="at shutdown, how long the writer keeps trying to write what is "
                                        "queued; the rest is counted and logged")
    max_pending: int = key(100_000, lo=1000, hi=10_000_000,
                           doc="most events held in memory while writes fail; past it the oldest are "
                               "discarded and counted")
    counts_retention_days: float = key(
        90.0, lo=0.01, hi=3650.0,
        doc="per-minute counts of line and zone events (the dashboard's counts chart, the MQTT `counts` "
            "topic) older than this are deleted, hourly; independent of the events' own limits")
