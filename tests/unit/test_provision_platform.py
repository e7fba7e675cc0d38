"""Choosing the detector from a (fake) device tree: Jetson, Coral on PCIe or USB, or neither."""
from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.provision import platform


def _usb(root, name, vendor, product):
    d = root / "sys/bus/usb/devices" / name
    d.mkdir(parents=True)
    (d / "idVendor").write_text(vendor + "\n")
    (d / "idProduct").write_text(product + "\n")


def test_detect(tmp_path):
    assert platform.detect(tmp_path) == platform.Platform(jetson=False, coral=None)
    _usb(tmp_path, "1-1", "046d", "0825")  # a webcam
    assert platform.detect(tmp_path).coral is None
    _usb(tmp_path, "2-1", "18d1", "9302")
    assert platform.detect(tmp_path).coral == "USB 18d1:9302"
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").touch()
    assert platform.detect(tmp_path).coral == "/dev/apex_0 (PCIe/M.2)"
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/compatible").write_text("nvidia,p3768-0000\0nvidia,tegra234\0")
    assert platform.detect(tmp_path).jetson


def test_choose():
    plain, jetson = platform.Platform(False, None), platform.Platform(True, None)
    coral = platform.Platform(False, "USB 1a6e:089a")
    assert platform.choose("auto", plain) == ({"model": "ssd-mobilenet-v2", "backend": "litert"},
                                              ["ssd-mobilenet-v2 on LiteRT (CPU)"])
    _, notes = platform.choose("auto", jetson)
    assert notes == ["Jetson: ssd-mobilenet-v2 is TFLite, so it runs on LiteRT (CPU); `appliance model convert` "
                     "makes ssd-mobilenet-v2-onnx, which runs on TensorRT (docs/tensorrt.md)"]
    # With the converted detector there (Dockerfile.l4t's image), a Jetson gets TensorRT.
    section, notes = platform.choose("auto", jetson, onnx_ready=True)
    assert section == {"model": "ssd-mobilenet-v2-onnx", "backend": "auto"} and "on TensorRT" in notes[0]
    assert platform.choose("auto", plain, onnx_ready=True)[0]["model"] == "ssd-mobilenet-v2"  # no GPU: LiteRT
    assert platform.choose("tensorrt", jetson, onnx_ready=True)[0] == {"model": "ssd-mobilenet-v2-onnx",
                                                                      "backend": "tensorrt"}
    _, notes = platform.choose("auto", coral, has_runtime=True)
    assert notes == ["ssd-mobilenet-v2 on the Edge TPU (Coral: USB 1a6e:089a)"]
    _, notes = platform.choose("edgetpu", coral, has_runtime=False)
    assert "libedgetpu.so.1 is not installed" in notes[1] and "libedgetpu1-std" in notes[1]
    _, notes = platform.choose("litert", coral)
    assert notes == ["ssd-mobilenet-v2 on LiteRT (CPU)"]
    with pytest.raises(ApplianceError, match="no Coral found.*\n  fix: plug the Coral in"):
        platform.choose("edgetpu", plain)
    with pytest.raises(ApplianceError, match="detector tensorrt: TensorRT runs ONNX detectors.*\n  fix: run "
                                             "`appliance model convert`"):
        platform.choose("tensorrt", jetson)
