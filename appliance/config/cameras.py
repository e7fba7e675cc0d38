"""`cameras`: where frames come from (appliance/capture/)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlparse

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.config.analytics import CalibrationConfig, LineConfig, ZoneConfig, check_camera_analytics
from appliance.config.base import FileCheck, OptionalText, Problems, Section, Text, key
from appliance.config.secrets import redact_uri


def classify_source(uri: str) -> tuple[str, str]:
    """(kind, target) of a camera source URI; ValueError says what is wrong with it.

    kind: file (target: a path, or `asset:NAME`'s NAME with kind "asset"), rtsp, v4l2,
    csi, gst or jetson. capture/source.py's parse_uri builds on this."""
    if uri.startswith("jetson:"):
        inner = uri[len("jetson:"):]
        if not inner:
            raise ValueError("expected jetson:URI, e.g. jetson:csi://0")
        return "jetson", inner
    if uri.startswith("gst:") or " ! " in uri:
        pipeline = uri[len("gst:"):].strip() if uri.startswith("gst:") else uri.strip()
        if not pipeline:
            raise ValueError("expected gst:PIPELINE")
        return "gst", pipeline
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "asset":
        if not parsed.path:
            raise ValueError("expected asset:NAME, a file in the asset cache")
        return "asset", parsed.path
    if scheme == "file":
        if not parsed.path:
            raise ValueError("expected file:///path")
        return "file", parsed.path
    if scheme in ("rtsp", "rtsps"):
        return "rtsp", uri
    if scheme == "v4l2":
        if not parsed.path.startswith("/dev/video"):
            raise ValueError("expected v4l2:///dev/videoN")
        return "v4l2", parsed.path
    if scheme == "csi":
        sensor = parsed.netloc or parsed.path.strip("/")
        if not sensor.isdigit():
            raise ValueError("expected csi://N (N: the sensor id, 0, 1, ...)")
        return "csi", sensor
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return "file", uri
    raise ValueError(f"unsupported scheme {scheme!r} (supported: a path, file://, asset:, "
                     "rtsp://, v4l2://, csi://, gst:, jetson:)")


class CameraConfig(Section):
    id: Text = key(doc="camera name, unique on this device")
    source: Text = key(
        doc="a file: `/path/file.mp4`, `file:///path`, `asset:NAME` (a file in the asset cache). A live "
            "camera: `rtsp://user:pw@host/stream`, `v4l2:///dev/video0`, `csi://N` (Jetson CSI sensor N "
            "through `nvarguscamerasrc`), `gst:PIPELINE` or any string containing ` ! ` (a GStreamer "
            "pipeline; a BGR `appsink` is appended when it has none), `jetson:URI` (any of these through "
            "jetson-utils `videoSource`). A password in an `rtsp://` URL is masked wherever the config "
            "is shown")
    realtime: bool = key(
        True, doc="files: play at the native frame rate, like a camera. `false` (or `appliance run "
                  "--fast`) processes every frame as fast as possible")
    loop: bool = key(False, doc="files: start again at the end")
    # Live cameras (rtsp, v4l2, csi, gst, jetson): supervision and capture settings.
    stall_timeout_s: float = key(
        5.0, lo=0.5, hi=600.0,
        doc="live: no frame for this long makes the camera `stalled` and starts a reconnection; also "
            "the RTSP read timeout")
    open_timeout_s: float = key(
        10.0, lo=0.5, hi=600.0,
        doc="live: longest a connection attempt may take (the RTSP open timeout); with no frame within "
            "`open_timeout_s + stall_timeout_s` of connecting, the attempt has failed")
    backoff_initial_s: float = key(
        0.5, lo=0.01, hi=600.0,
        doc="live: wait before the first reconnection attempt; it doubles after each failed attempt")
    backoff_max_s: float = key(
        2.0, lo=0.1, hi=3600.0,
        doc="live: longest wait between attempts. Each wait is shortened by a random 0–25 % (jitter), "
            "so cameras that failed together do not retry in step. With the default, a camera that "
            "comes back streams again within about 3 s")
    rtsp_transport: Literal["tcp", "udp"] = key(
        "tcp", doc="RTSP: RTP inside the RTSP TCP connection (works through NAT and firewalls, no loss), "
                   "or UDP. See \"RTSP options\" below")
    width: int = key(0, lo=0, hi=16384,
                     doc="v4l2, csi, jetson: requested width; `0`: the camera's default (csi: 1920)")
    height: int = key(0, lo=0, hi=16384,
                      doc="v4l2, csi, jetson: requested height; `0`: the camera's default (csi: 1080)")
    fps: float = key(
        0.0, lo=0.0, hi=1000.0,
        doc="v4l2, csi, jetson: requested frame rate; `0`: the camera's default (csi: 30). A V4L2 "
            "camera that gives something else is logged")
    fourcc: OptionalText = key(
        None, doc="v4l2: pixel format to ask for, e.g. `MJPG` (most USB cameras deliver 1080p at full "
                  "rate only as MJPG); none: the driver's default")
    detect_source: OptionalText = key(
        None, doc="live: a lower-resolution stream of the same camera, e.g. an RTSP camera's sub-stream "
                  "(same kind as `source`: `rtsp://` for an RTSP camera). When the detector cannot keep "
                  "up, the adaptive control switches the capture to it before it shrinks the input size "
                  "or skips frames, and back when there is headroom (`adaptive` events with "
                  "`detail.capture`); boxes stay in the main stream's pixels. None: the main stream only")
    detect_source_size: Optional[list[int]] = key(
        None, type="[width, height]",
        doc="v4l2, csi, jetson: the smaller size, `[width, height]`, to request from the camera when "
            "the adaptive control lowers the capture resolution (as `detect_source` does for RTSP; "
            "with both set, the size is requested from `detect_source`). None: the configured size only")
    target_fps: float = key(
        0.0, lo=0.0, hi=1000.0,
        doc="adaptive stride: frames per second this camera should be handled at; `0`: "
            "`adaptive.target_fps`")
    late_after_s: float = key(
        1.0, lo=0.01, hi=600.0,
        doc="a frame older than this when the detector takes it is counted as late (`late` in status, "
            "`appliance_frames_late_total`)")
    lines: list[LineConfig] = key(factory=list, shown="none",
                                  doc="counting lines (docs/analytics.md): `name`, `points`, `anchor`, `classes`")
    zones: list[ZoneConfig] = key(
        factory=list, shown="none",
        doc="zones (docs/analytics.md): `name`, `points`, `anchor`, `classes`, `loiter_s`, `max_speed_kmh`")
    calibration: Optional[CalibrationConfig] = key(
        None, doc="ground-plane calibration for speeds in km/h: four `image` points and their `world` "
                  "positions in metres (docs/analytics.md); none: headings and pixel speeds only")

    @model_validator(mode="after")
    def _analytics(self) -> "CameraConfig":
        p = Problems()
        check_camera_analytics(self, p)
        p.raise_any()
        return self

    @model_validator(mode="after")
    def _detect_source(self) -> "CameraConfig":
        p = Problems()
        check_detect_source(self, p)
        p.raise_any()
        return self

    @property
    def has_detect_source(self) -> bool:
        """The adaptive control may lower this camera's capture resolution."""
        return self.detect_source is not None or self.detect_source_size is not None

    @field_validator("source")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        try:
            classify_source(value)
        except ValueError as e:
            raise PydanticCustomError("camera_source", "{reason}, got {value}",
                                      {"reason": str(e), "value": repr(redact_uri(value))}) from None
        return value


SIZED_KINDS = ("v4l2", "csi", "jetson")  # sources that take a requested width and height


def check_detect_source(cam: CameraConfig, p: Problems) -> None:
    """detect_source: a live source of the camera's own kind; detect_source_size: two
    sizes, for sources that take a requested size."""
    try:
        kind = classify_source(cam.source)[0]
    except ValueError:
        return  # reported on `source`
    if cam.detect_source is not None:
        try:
            low = classify_source(cam.detect_source)[0]
        except ValueError as e:
            p.add("detect_source", f"{e}, got {redact_uri(cam.detect_source)!r}")
        else:
            if kind in ("file", "asset"):
                p.add("detect_source", "only for live cameras (rtsp, v4l2, csi, gst, jetson), "
                                       "not for a video file")
            elif low != kind:
                p.add("detect_source", f"must be the same kind of source as `source` ({kind}), "
                                       f"got a {low} source {redact_uri(cam.detect_source)!r}")
    size = cam.detect_source_size
    if size is not None:
        if kind not in SIZED_KINDS:
            p.add("detect_source_size", f"only for v4l2, csi and jetson cameras (a {kind} source takes "
                                        "no requested size; use detect_source for an RTSP sub-stream)")
        elif len(size) != 2 or not all(16 <= v <= 16384 for v in size):
            p.add("detect_source_size", f"expected [width, height], each 16..16384, got {size}")


def default_cameras() -> list[CameraConfig]:
    # vtest.avi: people walk along a pavement, left and right. The line stands across it
    # (`in`: walking to the right); the zone is the open area where it meets the road.
    return [CameraConfig(
        id="demo", source="asset:vtest.avi",
        lines=[LineConfig(name="walkway", points=[[0.45, 0.75], [0.45, 0.25]])],
        zones=[ZoneConfig(name="junction", points=[[0.6, 0.3], [0.97, 0.3], [0.97, 0.75], [0.6, 0.62]],
                          classes=["person"], loiter_s=10.0)])]


def check_cameras(cameras: list[CameraConfig]) -> None:
    """The rules of the list as a whole (raised as `cameras...` errors)."""
    p = Problems()
    if not cameras:
        p.add("", "at least one camera is needed")
    seen: set[str] = set()
    for i, cam in enumerate(cameras):
        if cam.id in seen:
            p.add(f"[{i}].id", f"duplicate camera id {cam.id!r}")
        seen.add(cam.id)
    p.raise_any()


def check_camera_files(cameras: list[CameraConfig], files: FileCheck, p: Problems) -> None:
    """Video files must exist: paths as given (relative to the working directory), asset:
    names in the asset cache."""
    for i, cam in enumerate(cameras):
        kind, target = classify_source(cam.source)
        if kind == "asset":
            path = files.assets_dir / target
            if not path.is_file():
                files.missing(p, f"cameras[{i}].source",
                              f"video file {target} is not in the asset cache {files.assets_dir}; "
                              "run 'appliance fetch'")
        elif kind == "file" and not Path(target).is_file():
            files.missing(p, f"cameras[{i}].source", f"video file {target} not found")
