"""Where the appliance keeps its files.

The data directory holds the SQLite database, status.json and the lock. It comes from
--data-dir, else $APPLIANCE_DATA_DIR, else ./data.

The asset cache (fetched weights and media, `appliance fetch`) does not depend on the
data directory: every data directory (a device's, a test's, a benchmark's temporary one)
uses the same cache. It is $APPLIANCE_ASSETS_DIR when set; else, in a source checkout,
`<checkout>/data/assets` whatever the working directory or --data-dir; else (an installed
package on a device) /var/lib/appliance/assets.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from appliance.errors import ApplianceError

# The directory above the package: a source checkout when it holds pyproject.toml and models/.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
# Model manifests ship in the source tree beside the package (models/<name>/model.yaml).
MODELS_DIR = PACKAGE_PARENT / "models"
# The asset cache of an installed (non-checkout) appliance.
DEVICE_ASSETS_DIR = Path("/var/lib/appliance/assets")


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("APPLIANCE_DATA_DIR") or "data").resolve()


def checkout_dir() -> Path | None:
    """The source checkout this package runs from, or None for an installed package."""
    root = PACKAGE_PARENT
    return root if (root / "pyproject.toml").is_file() and (root / "models").is_dir() else None


def assets_dir(_ignored: object = None) -> Path:
    """The asset cache: $APPLIANCE_ASSETS_DIR, else <checkout>/data/assets in a source
    checkout, else /var/lib/appliance/assets. Never depends on the data directory or the
    working directory, so `appliance fetch` once serves every --data-dir.

    Call it with no argument. (An argument, from callers that still pass the data
    directory, is accepted and ignored.)
    """
    env = os.environ.get("APPLIANCE_ASSETS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = checkout_dir()
    return (checkout / "data" / "assets").resolve() if checkout is not None else DEVICE_ASSETS_DIR


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
