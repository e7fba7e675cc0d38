"""Shared fixtures: the real, hash-verified assets, fetched once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.assets import fetch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    path = Path(os.environ.get("APPLIANCE_ASSETS_DIR") or REPO / "data" / "assets")
    fetch(path, ("default", "test"))
    return path


@pytest.fixture
def data_dir(tmp_path: Path, assets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory that shares the session's asset cache."""
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", str(assets_dir))
    monkeypatch.delenv("APPLIANCE_DATA_DIR", raising=False)
    return tmp_path / "data"
