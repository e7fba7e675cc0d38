"""Where the appliance keeps its files.

The data directory holds the SQLite database, status.json and the lock. It comes from
--data-dir, else $APPLIANCE_DATA_DIR, else ./data. On an installed device
(provisioning/install), the commands an installer runs by hand (`selftest`, `status`)
default to the service's config and data directory instead (`device_defaults`).

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

from appliance.errors import ApplianceError, DataDirBusy

# The directory above the package: a source checkout when it holds pyproject.toml and models/.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
# Model manifests ship in the source tree beside the package (models/<name>/model.yaml).
MODELS_DIR = PACKAGE_PARENT / "models"
# Where provisioning/install and appliance.service keep a device's config and data.
DEVICE_CONFIG = Path("/etc/appliance/config.yaml")
DEVICE_DATA_DIR = Path("/var/lib/appliance")
# The asset cache of an installed (non-checkout) appliance.
DEVICE_ASSETS_DIR = DEVICE_DATA_DIR / "assets"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("APPLIANCE_DATA_DIR") or "data").resolve()


def device_defaults(config: str | None, data: str | None) -> tuple[str | None, str | None, bool]:
    """(config, data dir, applied) for a command an installer runs on a device by hand:
    where DEVICE_CONFIG exists, no --config means that file, and no --data-dir (nor
    $APPLIANCE_DATA_DIR) means the service's data directory, so that a bare `appliance
    selftest` checks what the service runs, not the built-in demo. Elsewhere they stay."""
    if not DEVICE_CONFIG.exists():
        return config, data, False
    data_given = bool(data or os.environ.get("APPLIANCE_DATA_DIR"))
    applied = config is None or not data_given
    return (config or str(DEVICE_CONFIG), data if data_given else str(DEVICE_DATA_DIR), applied)


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
        raise DataDirBusy(
            f"data directory {data} is in use by another appliance (pid {holder}); "
            "stop it or use another --data-dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
