"""Shared fixtures: the real, hash-verified assets, fetched once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance import paths
from appliance.assets import fetch


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The asset cache the appliance itself resolves (paths.assets_dir(): $APPLIANCE_ASSETS_DIR,
    else <checkout>/data/assets), with the test-only assets too."""
    path = paths.assets_dir()
    fetch(path, ("default", "test"))
    return path


@pytest.fixture
def data_dir(tmp_path: Path, assets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory (not created yet). The asset cache does not depend on it:
    the appliance finds the session's cache from any data directory."""
    monkeypatch.delenv("APPLIANCE_DATA_DIR", raising=False)
    # `appliance run` serves the dashboard: on a free port, so runs never collide on 8080.
    monkeypatch.setenv("APPLIANCE_WEB_PORT", "0")
    return tmp_path / "data"


@pytest.fixture
def mqtt_broker(tmp_path: Path):
    """A real mosquitto (anonymous, no persistence) on a free 127.0.0.1 port; see
    tests/mqtt_broker.py for brokers with persistence, TLS or passwords."""
    from tests.mqtt_broker import Mosquitto

    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.close()


@pytest.fixture
def sub(mqtt_broker):
    """A subscriber to everything under the prefix "t" on the test's broker."""
    from tests.mqtt_broker import Subscriber

    s = Subscriber(mqtt_broker.port, ["t/#"]).start()
    yield s
    s.close()
