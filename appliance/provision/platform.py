"""Which detector suits this device: the Edge TPU when a Coral is present, LiteRT on the CPU
otherwise; TensorRT on a Jetson for an ONNX detector.

The default model, ssd-mobilenet-v2, has a CPU build and an Edge TPU build in one manifest
(models/ssd-mobilenet-v2/model.yaml): LiteRT runs the Edge TPU build by itself when it
finds libedgetpu.so.1, so a Coral needs no other model name. TensorRT runs `onnx` models
only (docs/tensorrt.md), and no general-purpose ONNX detector ships with the appliance, so a
Jetson runs the default model on LiteRT, and provision says how to use TensorRT instead.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

DEFAULT_MODEL = "ssd-mobilenet-v2"
# Coral USB Accelerator: Global Unichip before its firmware is loaded, Google after.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


@dataclass
class Platform:
    jetson: bool
    coral: str | None  # how the Coral was found ("/dev/apex_0", "USB 18d1:9302"), or None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def detect(root: Path = Path("/")) -> Platform:
    """The platform as seen under `root` (tests point it at a fake tree)."""
    jetson = (root / "etc/nv_tegra_release").exists() or \
        "nvidia,tegra" in _read(root / "proc/device-tree/compatible")
    coral = None
    if (root / "dev/apex_0").exists():
        coral = "/dev/apex_0 (PCIe/M.2)"
    else:
        for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
            ids = (_read(dev / "idVendor").lower(), _read(dev / "idProduct").lower())
            if ids in CORAL_USB_IDS:
                coral = f"USB {ids[0]}:{ids[1]}"
                break
    return Platform(jetson, coral)


def edgetpu_runtime() -> bool:
    try:
        ctypes.CDLL("libedgetpu.so.1")
        return True
    except OSError:
        return False


def choose(wanted: str, platform: Platform, has_runtime: bool | None = None) -> tuple[dict, list[str]]:
    """(the config's detect section, what to tell the installer) for the answer `wanted`
    (auto, litert, edgetpu, tensorrt). ApplianceError when it cannot be had here."""
    section = {"model": DEFAULT_MODEL, "backend": "litert"}
    if wanted == "tensorrt":
        raise ApplianceError(f"detector tensorrt: TensorRT runs ONNX detectors, and the default {DEFAULT_MODEL} "
                             "is TFLite\n  fix: answer detector: auto, then set detect.model to your ONNX "
                             "detector's manifest; detect.backend auto runs it on TensorRT (docs/tensorrt.md)")
    if wanted == "edgetpu" and platform.coral is None:
        raise ApplianceError("detector edgetpu: no Coral found (no /dev/apex_0, no USB 1a6e:089a or 18d1:9302)"
                             "\n  fix: plug the Coral in (USB 3 port) or load its PCIe driver (gasket-dkms), "
                             "or answer detector: auto")
    notes = []
    if platform.coral and wanted in ("auto", "edgetpu"):
        runtime = edgetpu_runtime() if has_runtime is None else has_runtime
        notes.append(f"{DEFAULT_MODEL} on the Edge TPU (Coral: {platform.coral})")
        if not runtime:
            notes.append("libedgetpu.so.1 is not installed, so it runs on the CPU until it is: "
                         "apt-get install libedgetpu1-std (Coral's apt repository)")
    elif platform.jetson and wanted == "auto":
        notes.append(f"Jetson: {DEFAULT_MODEL} is TFLite, so it runs on LiteRT (CPU); an ONNX detector in "
                     "detect.model would run on TensorRT (docs/tensorrt.md)")
    else:
        notes.append(f"{DEFAULT_MODEL} on LiteRT (CPU)")
    return section, notes
