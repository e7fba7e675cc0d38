"""Times given by people and consoles: unix seconds or ISO 8601."""
from __future__ import annotations

from datetime import datetime


def parse_iso(text: str) -> float:
    """Unix seconds of an ISO 8601 time; local time of the device when no zone is given, and
    a trailing Z means UTC (Python 3.10 does not read Z itself). ValueError otherwise."""
    dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    return (dt if dt.tzinfo else dt.astimezone()).timestamp()


def parse_time(text: str) -> float:
    """Unix seconds from "1795340000.5" or from an ISO 8601 time (see parse_iso)."""
    try:
        return float(text)
    except ValueError:
        return parse_iso(text)
