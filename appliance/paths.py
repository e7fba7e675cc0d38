"""Where the appliance keeps its files.

The data directory holds the SQLite database and the asset cache. It comes from
--data-dir, else $APPLIANCE_DATA_DIR, else ./data. The asset cache may be moved on its
own with $APPLIANCE_ASSETS_DIR, so that many data directories (tests, benches) share
one copy of the fetched weights and media.
"""
from __future__ import annotations

import os
from pathlib import Path

# Model manifests ship in the source tree beside the package (models/<name>/model.yaml).
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("APPLIANCE_DATA_DIR") or "data").resolve()


def assets_dir(data: Path) -> Path:
    env = os.environ.get("APPLIANCE_ASSETS_DIR")
    return Path(env).resolve() if env else data / "assets"


def db_path(data: Path) -> Path:
    return data / "appliance.db"


def status_path(data: Path) -> Path:
    return data / "status.json"
