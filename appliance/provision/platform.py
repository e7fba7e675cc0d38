"""Which detector suits this device: the Edge TPU when a Coral is present, TensorRT on a
Jetson that has the default detector as ONNX, LiteRT on the CPU otherwise.

The default model, ssd-mobilenet-v2, has a CPU build and an Edge TPU build in one manifest
(models/ssd-mobilenet-v2/model.yaml): LiteRT runs the Edge TPU build by itself when it
finds libedgetpu.so.1, so a Coral needs no other model name. TensorRT runs `onnx` models
only (docs/tensorrt.md): ssd-mobilenet-v2-onnx is the same detector converted by
`appliance model convert` (Dockerfile.l4t's image has it). Without that file a Jetson runs
the default model on LiteRT, and provision says how to get TensorRT.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

DEFAULT_MODEL = "ssd-mobilenet-v2"
ONNX_MODEL = "ssd-mobilenet-v2-onnx"
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


def onnx_model_ready(assets_dir: Path) -> bool:
    """ssd-mobilenet-v2-onnx's file is there (beside its manifest or in the asset directory)."""
    from appliance.detect.manifest import load_manifest

    try:
        load_manifest(ONNX_MODEL, assets_dir)
        return True
    except ApplianceError:
        return False


def choose(wanted: str, platform: Platform, has_runtime: bool | None = None,
           onnx_ready: bool = False) -> tuple[dict, list[str]]:
    """(the config's detect section, what to tell the installer) for the answer `wanted`
    (auto, litert, edgetpu, tensorrt). `onnx_ready`: ssd-mobilenet-v2-onnx can be loaded.
    ApplianceError when it cannot be had here."""
    section = {"model": DEFAULT_MODEL, "backend": "litert"}
    onnx = {"model": ONNX_MODEL, "backend": "auto"}
    if wanted == "tensorrt":
        if not onnx_ready:
            raise ApplianceError(f"detector tensorrt: TensorRT runs ONNX detectors, and {ONNX_MODEL} (the default "
                                 f"{DEFAULT_MODEL} as ONNX) is not here\n  fix: run `appliance model convert` "
                                 "(docs/tensorrt.md), or set detect.model to your own ONNX detector")
        return {**onnx, "backend": "tensorrt"}, [f"{ONNX_MODEL} on TensorRT (an FP16 engine is built at the "
                                                 "first start: minutes on a Nano)"]
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
    elif platform.jetson and wanted == "auto" and onnx_ready:
        section = onnx
        notes.append(f"Jetson: {ONNX_MODEL} on TensorRT where TensorRT and the GPU are usable, else ONNX Runtime "
                     "(an FP16 engine is built at the first start: minutes on a Nano)")
    elif platform.jetson and wanted == "auto":
        notes.append(f"Jetson: {DEFAULT_MODEL} is TFLite, so it runs on LiteRT (CPU); `appliance model convert` "
                     f"makes {ONNX_MODEL}, which runs on TensorRT (docs/tensorrt.md)")
    else:
        notes.append(f"{DEFAULT_MODEL} on LiteRT (CPU)")
    return section, notes
