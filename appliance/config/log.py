"""`log`: log level and status lines."""
from __future__ import annotations

from typing import Literal

from appliance.config.base import Section, key


class LogConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = key("INFO", doc="log level")
    stats_interval_s: float = key(
        5.0, lo=0.5, doc="seconds between status lines (fps, inference ms, live tracks, events stored)")
