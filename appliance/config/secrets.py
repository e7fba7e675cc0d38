"""Masking secrets wherever the config is shown (config check, the dashboard, MQTT config/get, logs)."""
from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+(?=@)", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """rtsp://user:pw@host/... as rtsp://user:***@host/..., for logs, status and shown config."""
    return _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config dict with secret values (passwords, hashes, tokens) and passwords
    inside URIs masked. A secret left unset stays visibly unset (None, or "")."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return MASK if value else ""
        return redact_uri(value)
    return value
