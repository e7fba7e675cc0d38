"""Opening live sources: RTSP, V4L2, CSI and GStreamer through OpenCV, or jetson-utils.

A reader is what one connection to a camera yields: `read() -> (ok, BGR image)` and
`release()`. The supervisor (capture/supervisor.py) opens one per connection attempt, on
its own thread, and throws it away when the connection fails; a reader never retries.

What each backend can bound by itself, and what it cannot:

- RTSP (FFmpeg): open and read timeouts are per capture (CAP_PROP_OPEN_TIMEOUT_MSEC,
  CAP_PROP_READ_TIMEOUT_MSEC; FFmpeg's interrupt callback). The transport (TCP or UDP) can
  only be passed through the process-wide OPENCV_FFMPEG_CAPTURE_OPTIONS variable, which
  FFmpeg reads when a capture opens; see `FfmpegOptions`.
- V4L2, GStreamer (csi://, gst:) and jetson-utils: no timeout we can rely on across
  versions. A read that hangs is caught from outside by the supervisor's stall watchdog.

Backends that are missing on this machine are found at startup (`check_backend`), so a
csi:// camera on a build without GStreamer is a clear one-line error, not a camera that
"fails to open" forever.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import cv2
import numpy as np

from appliance.capture.source import SourceSpec
from appliance.config import redact_uri
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# Set by whoever started us: then it wins, and cameras[].rtsp_transport is not applied.
_USER_FFMPEG_OPTIONS = os.environ.get(FFMPEG_ENV)


class SourceUnavailable(Exception):
    """A connection attempt failed (unreachable, refused, no frame); worth retrying."""


class Reader(Protocol):
    description: str

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class CaptureSettings:
    """What a connection needs from the camera's config (cameras[] in config.py)."""

    rtsp_transport: str = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    fourcc: str = ""


# -- what this machine can do --------------------------------------------------------

def opencv_has_gstreamer() -> bool:
    """OpenCV's GStreamer backend is usable (built in, or a loadable plugin)."""
    try:
        from cv2 import videoio_registry

        return bool(videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except (ImportError, AttributeError, cv2.error):
        return "GStreamer:                   YES" in cv2.getBuildInformation()


def jetson_utils_module() -> Any | None:
    """jetson-utils, imported only when a source asks for it (it pulls in CUDA)."""
    for name in ("jetson_utils", "jetson.utils"):  # the newer name, then the older one
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def backends_summary() -> str:
    """One line for the log: what this machine can capture with."""
    from cv2 import videoio_registry

    def has(api: int) -> str:
        try:
            return "yes" if videoio_registry.hasBackend(api) else "no"
        except cv2.error:
            return "no"

    return (f"OpenCV {cv2.__version__}: FFmpeg {has(cv2.CAP_FFMPEG)}, V4L2 {has(cv2.CAP_V4L2)}, "
            f"GStreamer {'yes' if opencv_has_gstreamer() else 'no'}; jetson-utils "
            f"{'installed' if _jetson_utils_installed() else 'not installed'}")


def _jetson_utils_installed() -> bool:
    """Without importing it (that would bring up CUDA for nothing)."""
    try:
        return any(importlib.util.find_spec(n) is not None for n in ("jetson_utils", "jetson"))
    except (ImportError, ValueError):
        return False


def check_backend(camera_id: str, spec: SourceSpec) -> None:
    """Raise a clear error at startup when the source's backend is missing here."""
    if spec.kind in ("csi", "gst") and not opencv_has_gstreamer():
        hint = ""
        if spec.kind == "csi" and jetson_utils_module() is not None:
            return  # csi:// falls back to jetson-utils
        if spec.kind == "csi":
            hint = " or jetson-utils (not importable either)"
        raise ApplianceError(
            f"camera {camera_id}: {spec.kind} source needs OpenCV built with GStreamer{hint}; "
            f"this OpenCV {cv2.__version__} has no GStreamer backend (pip's opencv-python-headless "
            "is built without it; on a Jetson use JetPack's OpenCV, see docs/installer-guide.md)")
    if spec.kind == "jetson" and jetson_utils_module() is None:
        raise ApplianceError(
            f"camera {camera_id}: jetson: source needs jetson-utils (import jetson_utils failed); "
            "it comes with JetPack's jetson-inference build, see docs/installer-guide.md")


# -- GStreamer pipelines -------------------------------------------------------------

APPSINK = "appsink drop=true max-buffers=1 sync=false"


def csi_pipeline(sensor: str, width: int = 0, height: int = 0, fps: float = 0.0) -> str:
    """nvarguscamerasrc → NVMM → BGR appsink, the usual Jetson CSI pipeline for OpenCV."""
    w, h, f = width or 1920, height or 1080, round(fps or 30)
    return (f"nvarguscamerasrc sensor-id={sensor} ! "
            f"video/x-raw(memory:NVMM),width={w},height={h},framerate={f}/1 ! "
            "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            + APPSINK)


def gst_pipeline(pipeline: str) -> str:
    """A user pipeline, ended with a BGR appsink when it has none (OpenCV needs one)."""
    if "appsink" in pipeline:
        return pipeline
    return f"{pipeline} ! videoconvert ! video/x-raw,format=BGR ! {APPSINK}"


# -- FFmpeg options ------------------------------------------------------------------

class FfmpegOptions:
    """Per-camera FFmpeg options through a process-wide environment variable.

    FFmpeg in OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS when a capture opens. When every
    registered camera wants the same options (the usual case), the variable is set once
    and opens run in parallel. When they differ, opens take turns under a lock with the
    variable set for each: a camera whose open hangs then delays the others' reconnects
    by up to its open_timeout_s (streaming cameras are never affected).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: dict[str, str] = {}

    def register(self, camera: str, options: str) -> None:
        self._wanted[camera] = options
        if _USER_FFMPEG_OPTIONS is not None:
            log.info("camera %s: %s is set in the environment (%r); its rtsp_transport "
                     "setting is not applied", camera, FFMPEG_ENV, _USER_FFMPEG_OPTIONS)

    def unregister(self, camera: str) -> None:
        self._wanted.pop(camera, None)

    @contextlib.contextmanager
    def applied(self, camera: str) -> Iterator[None]:
        options = self._wanted.get(camera)
        if options is None or _USER_FFMPEG_OPTIONS is not None:
            yield
            return
        if len(set(self._wanted.values())) == 1:
            with self._lock:
                if os.environ.get(FFMPEG_ENV) != options:
                    os.environ[FFMPEG_ENV] = options
            yield
            return
        with self._lock:
            os.environ[FFMPEG_ENV] = options
            yield


FFMPEG = FfmpegOptions()  # one per process, like the variable itself


def rtsp_options(settings: CaptureSettings) -> str:
    return f"rtsp_transport;{settings.rtsp_transport}"


# -- readers -------------------------------------------------------------------------

class CvReader:
    def __init__(self, cap: cv2.VideoCapture, description: str):
        self._cap = cap
        self.description = description

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self._cap.read()

    def release(self) -> None:
        self._cap.release()


class JetsonReader:
    """jetson-utils videoSource; frames come as CUDA RGB images, handed on as BGR numpy."""

    def __init__(self, ju: Any, uri: str, settings: CaptureSettings):
        argv = []
        if settings.width:
            argv.append(f"--input-width={settings.width}")
        if settings.height:
            argv.append(f"--input-height={settings.height}")
        if settings.fps:
            argv.append(f"--input-rate={settings.fps:g}")
        self._ju = ju
        self._timeout_ms = int(settings.read_timeout_s * 1000)
        try:
            self._src = ju.videoSource(uri, argv=argv)
        except Exception as e:  # jetson-utils raises plain Exceptions
            raise SourceUnavailable(f"jetson-utils videoSource({uri!r}) failed: {e}") from None
        self.description = f"jetson-utils {uri}"

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            try:
                img = self._src.Capture(format="rgb8", timeout=self._timeout_ms)
            except TypeError:  # older jetson-utils: no timeout argument
                img = self._src.Capture(format="rgb8")
        except Exception as e:
            log.debug("%s: capture failed: %s", self.description, e)
            return False, None
        if img is None:  # timeout
            return False, None
        self._ju.cudaDeviceSynchronize()
        # The image lives in a ring buffer that the next Capture() reuses: convert (copies).
        return True, cv2.cvtColor(self._ju.cudaToNumpy(img), cv2.COLOR_RGB2BGR)

    def release(self) -> None:
        try:
            self._src.Close()
        except Exception as e:
            log.debug("%s: close failed: %s", self.description, e)


def _set_v4l2(cap: cv2.VideoCapture, settings: CaptureSettings, what: str) -> None:
    if settings.fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*settings.fourcc[:4].ljust(4)))
    if settings.width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
    if settings.height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
    if settings.fps:
        cap.set(cv2.CAP_PROP_FPS, settings.fps)
    got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
           cap.get(cv2.CAP_PROP_FPS))
    want = (settings.width or got[0], settings.height or got[1], settings.fps or got[2])
    if got[:2] != want[:2] or abs(got[2] - want[2]) > 0.5:
        log.warning("%s: asked for %dx%d at %g fps, the camera gives %dx%d at %g fps",
                    what, *want, *got)


def open_reader(camera_id: str, spec: SourceSpec, settings: CaptureSettings) -> Reader:
    """Open one connection; SourceUnavailable when it cannot be made now."""
    if spec.kind == "jetson" or (spec.kind == "csi" and not opencv_has_gstreamer()):
        ju = jetson_utils_module()
        if ju is None:
            raise SourceUnavailable("jetson-utils is not importable")
        uri = spec.target if spec.kind == "jetson" else f"csi://{spec.target}"
        return JetsonReader(ju, uri, settings)
    if spec.kind == "rtsp":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.read_timeout_s * 1000)]
        with FFMPEG.applied(camera_id):
            cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
        what = f"{redact_uri(spec.target)} over {settings.rtsp_transport.upper()}"
    elif spec.kind in ("csi", "gst"):
        pipeline = (csi_pipeline(spec.target, settings.width, settings.height, settings.fps)
                    if spec.kind == "csi" else gst_pipeline(spec.target))
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        what = f"GStreamer pipeline {pipeline!r}"
    elif spec.kind == "v4l2":
        cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
        what = f"V4L2 {spec.target}"
        if cap.isOpened():
            _set_v4l2(cap, settings, f"camera {camera_id}: {what}")
    else:
        raise ValueError(f"not a live source kind: {spec.kind}")
    if not cap.isOpened():
        cap.release()
        raise SourceUnavailable(f"cannot open {what}")
    return CvReader(cap, what)
