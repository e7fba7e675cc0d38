"""Builds fake device trees (sysfs, procfs, /etc) for the power manager's tests.

Layouts follow the kernel's documented ABI:
- thermal: /sys/class/thermal/thermal_zone<N>/type, temp in millidegrees Celsius
  (https://www.kernel.org/doc/html/latest/driver-api/thermal/sysfs-api.html)
- cpufreq: /sys/devices/system/cpu/cpufreq/policy<N>/scaling_governor,
  scaling_available_governors (https://www.kernel.org/doc/html/latest/admin-guide/pm/cpufreq.html)
- INA3221 power monitor (Jetson Orin): /sys/class/hwmon/hwmon<N>/name "ina3221",
  in<N>_label, in<N>_input (mV), curr<N>_input (mA)
  (https://www.kernel.org/doc/html/latest/hwmon/ina3221.html)
- device tree: /proc/device-tree/model and compatible (NUL-terminated strings)
- Jetson: /etc/nv_tegra_release, /etc/nvpmodel.conf with "< POWER_MODEL ID=<n> NAME=<name> >"
  blocks and "< PM_CONFIG DEFAULT=<n> >" (Jetson Linux Developer Guide, Power Management).
"""
from __future__ import annotations

from pathlib import Path

ORIN_NANO_ZONES = {"cpu-thermal": 48.5, "gpu-thermal": 46.0, "cv0-thermal": 45.2,
                   "soc0-thermal": 47.1, "tj-thermal": 49.0, "PMIC-Die": 100.0}
ORIN_NANO_MODES = [(0, "15W"), (1, "7W"), (2, "MAXN_SUPER")]  # JetPack 6.2 Orin Nano ids
ORIN_NANO_RAILS = {"VDD_IN": (5072, 1380), "VDD_CPU_GPU_CV": (5072, 420), "VDD_SOC": (5072, 560)}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def thermal_zones(root: Path, zones: dict[str, float]) -> None:
    for i, (kind, celsius) in enumerate(zones.items()):
        _write(root / f"sys/class/thermal/thermal_zone{i}/type", kind + "\n")
        _write(root / f"sys/class/thermal/thermal_zone{i}/temp", f"{round(celsius * 1000)}\n")


def set_temperature(root: Path, zone: str, celsius: float) -> None:
    for d in (root / "sys/class/thermal").glob("thermal_zone*"):
        if (d / "type").read_text().strip() == zone:
            (d / "temp").write_text(f"{round(celsius * 1000)}\n")
            return
    raise KeyError(zone)


def jetson_tree(root: Path, zones: dict[str, float] | None = None,
                modes: list[tuple[int, str]] | None = None, default: int = 0,
                rails: dict[str, tuple[int, int]] | None = None) -> Path:
    """A Jetson Orin Nano as the appliance sees it; nvpmodel starts in mode `default`."""
    _write(root / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit\0")
    _write(root / "proc/device-tree/compatible",
           "nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234\0")
    _write(root / "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, "
                                          "BOARD: generic, EABI: aarch64\n")
    conf = ["< PARAM TYPE=FILE NAME=CPU_ONLINE >", "CORE_0 /sys/devices/system/cpu/cpu0/online", ""]
    for mid, name in modes or ORIN_NANO_MODES:
        conf += [f"< POWER_MODEL ID={mid} NAME={name} >", "CPU_ONLINE CORE_0 1", ""]
    conf.append(f"< PM_CONFIG DEFAULT={default} >")
    _write(root / "etc/nvpmodel.conf", "\n".join(conf) + "\n")
    _write(root / "var/lib/nvpmodel/status", f"pmode:{default:04d}\n")
    thermal_zones(root, ORIN_NANO_ZONES if zones is None else zones)
    hw = root / "sys/class/hwmon/hwmon1"
    _write(hw / "name", "ina3221\n")
    for n, (label, (mv, ma)) in enumerate((rails or ORIN_NANO_RAILS).items(), start=1):
        _write(hw / f"in{n}_label", label + "\n")
        _write(hw / f"in{n}_input", f"{mv}\n")
        _write(hw / f"curr{n}_input", f"{ma}\n")
    return root


def rpi_tree(root: Path, celsius: float = 52.1, governor: str = "ondemand", cpus: int = 1,
             throttled: int = 0) -> Path:
    """A Raspberry Pi 4: one cpufreq policy, one thermal zone, vcgencmd's throttle bits."""
    _write(root / "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.5\0")
    _write(root / "proc/device-tree/compatible", "raspberrypi,4-model-b\0brcm,bcm2711\0")
    thermal_zones(root, {"cpu-thermal": celsius})
    for n in range(cpus):
        pol = root / f"sys/devices/system/cpu/cpufreq/policy{n}"
        _write(pol / "scaling_available_governors",
               "conservative ondemand userspace powersave performance schedutil \n")
        _write(pol / "scaling_governor", governor + "\n")
        _write(pol / "scaling_cur_freq", "1500000\n")
    set_throttled(root, throttled)
    return root


def set_throttled(root: Path, bits: int) -> None:
    _write(root / "fake/vcgencmd_throttled", f"{bits}\n")


FAKE_BIN = Path(__file__).resolve().parent / "bin"


def use_fake_tools(monkeypatch, root: Path) -> None:
    """Put the fake nvpmodel, jetson_clocks and vcgencmd first on PATH, keeping state in root."""
    import os

    monkeypatch.setenv("FAKE_JETSON_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
