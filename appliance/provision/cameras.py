"""Cameras for `appliance provision`: the V4L2 devices present, and a test of a source that
opens it with a timeout, reads one frame and saves it as a JPEG for the installer to look at.

The test opens the source the way the appliance does (capture/readers.py for live sources:
FFmpeg's open and read timeouts for RTSP), so a URL that passes here is one the appliance
can open.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import cv2

from appliance.config import redact_uri
from appliance.errors import ApplianceError


def video_devices(pattern: str = "/dev/video*") -> list[str]:
    """The V4L2 device nodes present, in numeric order (/dev/video0, /dev/video1, ...)."""
    def number(p: str) -> tuple[int, str]:
        digits = p.rsplit("video", 1)[-1]
        return (int(digits), p) if digits.isdigit() else (1 << 30, p)
    return sorted((p for p in glob.glob(pattern) if os.path.exists(p)), key=number)


def as_source(text: str) -> str:
    """What the installer typed, as a camera source: a bare /dev/videoN becomes v4l2:///dev/videoN."""
    text = text.strip()
    if text.startswith("/dev/video"):
        return f"v4l2://{text}"
    return text


@dataclass
class CameraTest:
    camera_id: str
    source: str  # as the config will have it (the password shown as ***)
    width: int
    height: int
    snapshot: Path


def _hint(kind: str) -> str:
    if kind == "rtsp":
        return ("check the URL (path, user and password: open it in VLC on a laptop), that the camera "
                "is on this network (ping it) and that its RTSP port (usually 554) is open; a camera "
                "behind NAT or a firewall needs rtsp_transport tcp (the default)")
    if kind == "v4l2":
        return ("check that the camera is plugged in (v4l2-ctl --list-devices) and that no other program "
                "holds it; the service's user must be in the group video")
    if kind in ("csi", "gst", "jetson"):
        return "check the camera's ribbon cable and that JetPack's OpenCV (with GStreamer) is the one in use"
    return "check that the file exists and is a video OpenCV can read"


def test_camera(camera_id: str, source: str, snapshot_dir: Path, timeout_s: float = 10.0) -> CameraTest:
    """Open `source`, read one frame within `timeout_s`, save it as <snapshot_dir>/<id>.jpg.
    ApplianceError says what failed and how to fix it."""
    from appliance import paths
    from appliance.capture.readers import CaptureSettings, SourceUnavailable, check_backend, open_reader
    from appliance.capture.source import parse_uri

    shown = redact_uri(source)
    spec = parse_uri(source, paths.assets_dir())
    hint = _hint(spec.kind)
    image = None
    if spec.live:
        check_backend(camera_id, spec)
        settings = CaptureSettings(open_timeout_s=timeout_s, read_timeout_s=timeout_s)
        try:
            reader = open_reader(camera_id, spec, settings)
        except SourceUnavailable as e:
            raise ApplianceError(f"camera {camera_id}: {e} (no answer within {timeout_s:g} s)\n  fix: {hint}") from None
        try:
            ok, image = reader.read()
        finally:
            reader.release()
    else:
        cap = cv2.VideoCapture(spec.target, spec.backend)
        try:
            ok, image = cap.read() if cap.isOpened() else (False, None)
        finally:
            cap.release()
    if not ok or image is None or image.size == 0:
        raise ApplianceError(f"camera {camera_id}: {shown} opened but gave no frame within {timeout_s:g} s"
                             f"\n  fix: {hint}")
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_dir / f"{camera_id}.jpg"
    if not cv2.imwrite(str(snapshot), image):
        raise ApplianceError(f"camera {camera_id}: cannot save the snapshot {snapshot}\n  fix: check the disk "
                             f"({snapshot_dir} must be writable and not full)")
    h, w = image.shape[:2]
    return CameraTest(camera_id, shown, w, h, snapshot)
