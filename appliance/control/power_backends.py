"""What the power manager can read and change on this device.

- Jetson: power modes with `nvpmodel` (`-q` current, `-p --verbose` the list, `-m ID` set),
  clocks with `jetson_clocks` (`--show`, `--store FILE`, `--restore FILE`), temperatures
  from the thermal zones and rail power from the INA3221 monitors in sysfs.
- Raspberry Pi and any Linux: the cpufreq governor is the mode (performance, schedutil,
  ondemand, conservative, powersave), temperatures from the thermal zones, and
  `vcgencmd get_throttled` where it exists.

Formats, as documented:
- nvpmodel: NVIDIA Jetson Linux Developer Guide, Power Management ("nvpmodel -q" prints
  "NV Power Mode: <NAME>" then the mode id; /etc/nvpmodel.conf declares modes as
  "< POWER_MODEL ID=<n> NAME=<name> >"); -p --verbose lists them as
  "POWER_MODEL: ID=<n> NAME=<name>".
  https://docs.nvidia.com/jetson/archives/r36.3/DeveloperGuide/SD/PlatformPowerAndPerformance/JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html
  https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-3271/Tegra%20Linux%20Driver%20Package%20Development%20Guide/power_management_nano.html
- thermal zones: /sys/class/thermal/thermal_zone*/type and temp (millidegrees Celsius),
  https://www.kernel.org/doc/html/latest/driver-api/thermal/sysfs-api.html
- cpufreq: /sys/devices/system/cpu/cpufreq/policy*/scaling_governor,
  scaling_available_governors, https://www.kernel.org/doc/html/latest/admin-guide/pm/cpufreq.html
- INA3221: hwmon in<N>_label, in<N>_input (mV), curr<N>_input (mA),
  https://www.kernel.org/doc/html/latest/hwmon/ina3221.html
- vcgencmd get_throttled: "throttled=0x50005", a bit field (0 under-voltage, 1 ARM
  frequency capped, 2 throttled, 3 soft temperature limit; 16-19 the same, has occurred),
  https://www.raspberrypi.com/documentation/computers/os.html#get_throttled

Anything missing (no nvpmodel, no cpufreq, a container) makes the backend a dry run: it
reads what it can, says why it cannot act, and changes nothing.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import PowerConfig

log = logging.getLogger(__name__)

# Zones known to report a constant, not a temperature (Jetson Nano/TX's PMIC-Die reads 100 C).
CONSTANT_ZONES = {"PMIC-Die"}
GOVERNORS = ("performance", "schedutil", "ondemand", "conservative", "powersave")  # fastest first
THROTTLE_BITS = {0: "under-voltage", 1: "arm-frequency-capped", 2: "throttled", 3: "soft-temperature-limit",
                 16: "under-voltage-occurred", 17: "arm-frequency-capped-occurred",
                 18: "throttled-occurred", 19: "soft-temperature-limit-occurred"}
TOOL_TIMEOUT_S = 60.0  # nvpmodel -m can take several seconds on Orin


class PowerError(Exception):
    """A reading or a change failed; reported, never fatal."""


@dataclass
class Reading:
    temperatures: dict[str, float] = field(default_factory=dict)  # zone -> Celsius
    throttled: bool | None = None  # None: this platform does not report it
    throttle_flags: list[str] = field(default_factory=list)
    rails_w: dict[str, float] = field(default_factory=dict)


class Sysfs:
    """Files under a root (/ on a device; a fake tree in tests)."""

    def __init__(self, root: str):
        self.root = Path(root)

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def read(self, p: str | Path) -> str | None:
        path = p if isinstance(p, Path) else self.path(p)
        try:
            return path.read_text().strip().strip("\x00")
        except (OSError, UnicodeDecodeError):  # offline zones answer EINVAL/ENODATA
            return None

    def temperatures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for zone in sorted(self.path("/sys/class/thermal").glob("thermal_zone*"),
                           key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
            kind, raw = self.read(zone / "type"), self.read(zone / "temp")
            try:
                celsius = int(raw) / 1000.0 if raw is not None else None
            except ValueError:
                celsius = None
            if not kind or celsius is None or celsius <= -40.0:  # -40 or less: sensor off
                continue
            name = kind if kind not in out else f"{kind}.{zone.name.removeprefix('thermal_zone')}"
            out[name] = celsius
        return out

    def ina3221_rails(self) -> dict[str, float]:
        rails: dict[str, float] = {}
        for hw in sorted(self.path("/sys/class/hwmon").glob("hwmon*")):
            if not (self.read(hw / "name") or "").startswith("ina3221"):
                continue
            for label_file in sorted(hw.glob("in*_label")):
                n = label_file.name[2:-len("_label")]
                label, mv, ma = (self.read(label_file), self.read(hw / f"in{n}_input"),
                                 self.read(hw / f"curr{n}_input"))
                try:
                    if label and mv is not None and ma is not None:
                        rails[label] = round(int(mv) * int(ma) / 1e6, 3)
                except ValueError:
                    continue
        return rails

    def model(self) -> str:
        return self.read("/proc/device-tree/model") or ""


def _tool(cmd: str) -> str | None:
    """The executable for a configured command: a path, or a name looked up on PATH."""
    return shutil.which(cmd)


def _run(args: list[str]) -> str:
    try:
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PowerError(f"{' '.join(args)}: {e}") from None
    out = (r.stdout or "") + (r.stderr or "")
    errors = [line for line in out.splitlines() if "ERROR" in line]
    if r.returncode != 0 or errors:
        first = (errors or out.strip().splitlines() or [f"exit status {r.returncode}"])[0]
        raise PowerError(f"{' '.join(args)}: {first.strip()}")
    return r.stdout


def nvpmodel_ladder(modes: list[tuple[int, str]]) -> list[str]:
    """Names from fastest to most frugal: MAXN first, then by the watts in the name, then id."""
    def key(m: tuple[int, str]) -> tuple[int, float, int]:
        mid, name = m
        watts = re.search(r"(\d+(?:\.\d+)?)\s*W", name, re.IGNORECASE)
        return (0 if "MAXN" in name.upper() else 1, -float(watts.group(1)) if watts else 0.0, mid)
    return [name for _, name in sorted(modes, key=key)]


def parse_nvpmodel_modes(text: str) -> list[tuple[int, str]]:
    """Modes from `nvpmodel -p --verbose` output or /etc/nvpmodel.conf."""
    found = re.findall(r"POWER_MODEL:?\s+ID=(\d+)\s+NAME=([^\s>]+)", text)
    return [(int(i), name) for i, name in found]


def parse_nvpmodel_query(text: str) -> tuple[str, int | None] | None:
    """(name, id) from `nvpmodel -q`: "NV Power Mode: <NAME>" and the id on the next line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"NV Power Mode:\s*(\S+)", line)
        if m:
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return m.group(1), int(nxt) if nxt.isdigit() else None
    return None


def parse_throttled(text: str) -> int:
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise PowerError(f"vcgencmd get_throttled: unexpected output {text.strip()!r}")
    return int(m.group(1), 0)


def parse_jetson_clocks_show(text: str) -> bool | None:
    """Clocks locked at maximum (jetson_clocks active): every CPU's min = max = current."""
    cpus = re.findall(r"cpu\d+: Online=1 Governor=\S+ MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text)
    if not cpus:
        return None
    return all(lo == hi == cur for lo, hi, cur in cpus)


class Backend:
    name = "none"
    platform = "linux"

    def __init__(self, cfg: PowerConfig, sysfs: Sysfs, reason: str = ""):
        self.cfg = cfg
        self.sysfs = sysfs
        self.model = sysfs.model()
        self.dry_run_reason = reason
        self._modes: list[str] | None = None

    @property
    def dry_run(self) -> bool:
        return bool(self.dry_run_reason)

    def modes(self) -> list[str]:
        return []

    def current_mode(self) -> str | None:
        return None

    def set_mode(self, mode: str) -> None:
        raise PowerError(f"dry run: {self.dry_run_reason}")

    def read(self) -> Reading:
        return Reading(self.sysfs.temperatures())

    def extra(self) -> dict:
        return {}


class JetsonBackend(Backend):
    name = platform = "jetson"

    def __init__(self, cfg: PowerConfig, sysfs: Sysfs):
        self.nvpmodel = _tool(cfg.nvpmodel_cmd)
        self.jetson_clocks = _tool(cfg.jetson_clocks_cmd)
        reason = "" if self.nvpmodel else f"nvpmodel not found ({cfg.nvpmodel_cmd!r} is not on PATH)"
        super().__init__(cfg, sysfs, reason)

    def modes(self) -> list[str]:
        if self._modes is None:
            try:
                text = _run([self.nvpmodel, "-p", "--verbose"]) if self.nvpmodel else ""
            except PowerError as e:
                log.warning("power: %s", e)
                text = ""
            found = parse_nvpmodel_modes(text) or parse_nvpmodel_modes(
                self.sysfs.read("/etc/nvpmodel.conf") or "")
            self._ids = {name: mid for mid, name in found}
            self._modes = nvpmodel_ladder(found)
        return self._modes

    def current_mode(self) -> str | None:
        if not self.nvpmodel:
            return None
        q = parse_nvpmodel_query(_run([self.nvpmodel, "-q"]))
        return q[0] if q else None

    def set_mode(self, mode: str) -> None:
        if self.dry_run:
            raise PowerError(f"dry run: {self.dry_run_reason}")
        self.modes()
        if mode not in self._ids:
            raise PowerError(f"nvpmodel has no mode {mode!r} (modes: {', '.join(self.modes())})")
        _run([self.nvpmodel, "-m", str(self._ids[mode])])
        now = self.current_mode()
        if now != mode:  # some boards need a reboot for some modes
            raise PowerError(f"nvpmodel -m {self._ids[mode]} did not take effect (mode is still {now}; "
                             "this board may need a reboot for it)")

    def read(self) -> Reading:
        return Reading(self.sysfs.temperatures(), rails_w=self.sysfs.ina3221_rails())

    def clocks_locked(self) -> bool | None:
        if not self.jetson_clocks:
            return None
        try:
            return parse_jetson_clocks_show(_run([self.jetson_clocks, "--show"]))
        except PowerError as e:
            log.debug("power: %s", e)
            return None

    def lock_clocks(self, store: Path) -> None:
        if not self.jetson_clocks:
            raise PowerError(f"jetson_clocks not found ({self.cfg.jetson_clocks_cmd!r} is not on PATH)")
        if not store.exists():  # the clocks as the mode set them, to go back to
            _run([self.jetson_clocks, "--store", str(store)])
        _run([self.jetson_clocks])

    def unlock_clocks(self, store: Path) -> None:
        if self.jetson_clocks and store.exists():
            _run([self.jetson_clocks, "--restore", str(store)])

    def extra(self) -> dict:
        return {"jetson_clocks_locked": self.clocks_locked()}


class LinuxBackend(Backend):
    """Raspberry Pi and generic Linux: the cpufreq governor is the mode."""

    name = "linux"

    def __init__(self, cfg: PowerConfig, sysfs: Sysfs):
        self.policies = sorted(sysfs.path("/sys/devices/system/cpu/cpufreq").glob("policy*"))
        self.vcgencmd = _tool(cfg.vcgencmd_cmd)
        reason = "" if self.policies else \
            f"no cpufreq policies under {sysfs.path('/sys/devices/system/cpu/cpufreq')}"
        super().__init__(cfg, sysfs, reason)
        self.platform = "raspberry-pi" if self.model.startswith("Raspberry Pi") else "linux"

    def modes(self) -> list[str]:
        if self._modes is None:
            avail = (self.sysfs.read(self.policies[0] / "scaling_available_governors") or "").split() \
                if self.policies else []
            self._modes = [g for g in GOVERNORS if g in avail]
        return self._modes

    def current_mode(self) -> str | None:
        return self.sysfs.read(self.policies[0] / "scaling_governor") if self.policies else None

    def set_mode(self, mode: str) -> None:
        if self.dry_run:
            raise PowerError(f"dry run: {self.dry_run_reason}")
        if mode not in self.modes():
            raise PowerError(f"governor {mode!r} is not available (available: {', '.join(self.modes())})")
        for policy in self.policies:
            try:
                (policy / "scaling_governor").write_text(mode)
            except OSError as e:
                raise PowerError(f"cannot write {policy / 'scaling_governor'}: {e.strerror or e} "
                                 "(changing the governor needs root)") from None

    def read(self) -> Reading:
        reading = Reading(self.sysfs.temperatures())
        if self.vcgencmd:
            try:
                bits = parse_throttled(_run([self.vcgencmd, "get_throttled"]))
            except PowerError as e:
                log.debug("power: %s", e)
            else:
                reading.throttled = bool(bits & 0xF)
                reading.throttle_flags = [n for b, n in THROTTLE_BITS.items() if bits >> b & 1]
        return reading


def detect(cfg: PowerConfig) -> Backend:
    """The backend for this device (or the one the config names)."""
    sysfs = Sysfs(cfg.root)
    if cfg.backend == "none":
        return Backend(cfg, sysfs, "power.backend is none")
    compatible = sysfs.read("/proc/device-tree/compatible") or ""
    jetson = sysfs.path("/etc/nv_tegra_release").exists() or "nvidia,tegra" in compatible
    if cfg.backend == "jetson" or (cfg.backend == "auto" and jetson):
        return JetsonBackend(cfg, sysfs)
    return LinuxBackend(cfg, sysfs)
