"""Logging set-up: one line per record, journald-friendly."""
from __future__ import annotations

import logging
import os
import sys


def setup(level: str = "INFO") -> None:
    # Under systemd, journald stamps each line itself.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
