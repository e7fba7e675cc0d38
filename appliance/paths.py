"""Where the appliance keeps its files.

The data directory holds the SQLite database and the asset cache. It comes from
--data-dir, else $APPLIANCE_DATA_DIR, else ./data. The asset cache may be moved on its
own with $APPLIANCE_ASSETS_DIR, so that many data directories (tests, benches) share
one copy of the fetched weights and media.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from appliance.errors import ApplianceError

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


# status.json is rewritten every few seconds while the appliance runs; older means stopped.
STATUS_STALE_AFTER_S = 60.0


def read_status(data: Path) -> tuple[dict, float]:
    """What the running appliance last wrote to status.json, and its age in seconds."""
    path = status_path(data)
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        raise ApplianceError(f"no status at {path} (is 'appliance run' using this data dir?)") from None
    except (OSError, ValueError) as e:
        raise ApplianceError(f"cannot read status {path}: {e}") from None
    return status, time.time() - status.get("written_at", 0)


def lock_data_dir(data: Path) -> IO[str]:
    """Hold the data directory for this process: two appliances writing one database
    would hand out the same event sequence numbers. The lock ends with the process,
    or when the returned file is closed."""
    data.mkdir(parents=True, exist_ok=True)
    f = open(data / "appliance.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise ApplianceError(
            f"data directory {data} is in use by another appliance (pid {holder}); "
            "stop it or use another --data-dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
