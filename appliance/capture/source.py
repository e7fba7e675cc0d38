"""Camera sources named by URI, and files read through OpenCV.

    /path/to/video.mp4, file:///path/to/video.mp4   a file (paced at its native rate, or fast)
    asset:vtest.avi                                 a file in the asset cache (the demo)
    rtsp://host/stream                              an RTSP camera (FFmpeg backend)
    v4l2:///dev/video0                              a USB/V4L2 camera
    csi://0                                         a Jetson CSI camera (nvarguscamerasrc)
    gst:PIPELINE, or any string with " ! "          a GStreamer pipeline (OpenCV's GStreamer backend)
    jetson:URI                                      any of the above through jetson-utils videoSource

`parse_uri` names the kind of a source. Files are read by `VideoSource` here, and a file
that cannot be opened stops the start. Live sources are opened by capture/readers.py and
kept alive by capture/supervisor.py, which reconnects them and never stops the appliance.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from appliance.capture.frame import Frame
from appliance.config import classify_source
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

# A live stream is given up after this many failed reads in a row; a file is at its end.
MAX_CONSECUTIVE_FAILURES = 25


LIVE_KINDS = ("rtsp", "v4l2", "csi", "gst", "jetson")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "file" | "rtsp" | "v4l2" | "csi" | "gst" | "jetson"
    target: str  # what the backend opens: a path, URL, device, sensor id, pipeline or jetson URI
    backend: int  # cv2.CAP_*; cv2.CAP_ANY for jetson-utils, which is not OpenCV

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS


_BACKENDS = {"file": cv2.CAP_FFMPEG, "rtsp": cv2.CAP_FFMPEG, "v4l2": cv2.CAP_V4L2,
             "csi": cv2.CAP_GSTREAMER, "gst": cv2.CAP_GSTREAMER, "jetson": cv2.CAP_ANY}


def parse_uri(uri: str, assets_dir: Path | None = None) -> SourceSpec:
    """The kind and target of a source URI; its syntax rules are the config's
    (config.classify_source), which checked cameras[].source when it loaded."""
    try:
        kind, target = classify_source(uri)
    except ValueError as e:
        raise ApplianceError(f"source {uri!r}: {e}") from None
    if kind == "asset":
        if assets_dir is None:
            raise ApplianceError(f"source {uri!r}: asset: URIs need the asset directory")
        kind, target = "file", str(assets_dir / target)
    return SourceSpec(kind, target, _BACKENDS[kind])


def valid_image(img: np.ndarray | None) -> bool:
    return img is not None and img.ndim == 3 and img.shape[2] == 3 and img.size > 0


class VideoSource:
    """One camera: opens its URI and yields Frames until the stream ends or stop is set.

    Corrupt frames are counted in `corrupt` and skipped. For files, frames the container
    declares but the decoder could not deliver (FFmpeg drops damaged ones silently) are
    added to `corrupt` when the file ends.
    """

    def __init__(self, camera_id: str, uri: str, assets_dir: Path | None = None,
                 realtime: bool = True, loop: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] | None = None):
        """clock and wait(stop, seconds) (True when stop is set) pace realtime playback;
        tests pass fake ones. Frames always carry the real times."""
        self.camera_id = camera_id
        self.uri = uri
        self.spec = parse_uri(uri, assets_dir)
        self.realtime = realtime
        self.loop = loop and self.spec.kind == "file"
        self.corrupt = 0
        self.fps = 0.0
        self.last_read_s = 0.0  # time the last read (decode) took
        self._cap: cv2.VideoCapture | None = None
        self._clock = clock
        self._wait = wait or (lambda stop, seconds: stop.wait(seconds))

    @property
    def is_file(self) -> bool:
        return self.spec.kind == "file"

    def open(self) -> None:
        if self.is_file and not Path(self.spec.target).is_file():
            raise ApplianceError(f"camera {self.camera_id}: video file {self.spec.target} not found")
        cap = cv2.VideoCapture(self.spec.target, self.spec.backend)
        if not cap.isOpened():
            raise ApplianceError(
                f"camera {self.camera_id}: cannot open {self.uri} (unreadable, corrupt or unreachable)"
            )
        ok, first = cap.read()
        if not ok or not valid_image(first):
            cap.release()
            raise ApplianceError(f"camera {self.camera_id}: {self.uri} opened but gave no decodable frame")
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._cap, self._first = cap, first
        h, w = first.shape[:2]
        log.info("camera %s: opened %s (%dx%d, %.1f fps)", self.camera_id, self.uri, w, h, self.fps)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def frames(self, stop: threading.Event, max_frames: int | None = None) -> Iterator[Frame]:
        """Yield frames; call open() first. Ends at end of file (unless looping) or on stop."""
        if self._cap is None:
            self.open()
        cap = self._cap
        assert cap is not None
        period = 1.0 / self.fps if (self.is_file and self.realtime and self.fps > 0) else 0.0
        seq, failures, decoded_this_pass = 0, 0, 0
        next_due = self._clock()
        pending: np.ndarray | None = self._first
        while not stop.is_set() and (max_frames is None or seq < max_frames):
            if pending is not None:
                ok, img = True, pending
                pending = None
            else:
                t0 = time.perf_counter()
                ok, img = cap.read()
                self.last_read_s = time.perf_counter() - t0
            if not ok or not valid_image(img):
                failures += 1
                if failures < MAX_CONSECUTIVE_FAILURES:
                    continue
                if not self.is_file:
                    log.error("camera %s: %d failed reads in a row; stream lost", self.camera_id, failures)
                    break
                self._count_undecoded(cap, decoded_this_pass)
                failures = 0
                if not self.loop:
                    break
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                decoded_this_pass = 0
                continue
            if not self.is_file:
                self.corrupt += failures  # reads that failed mid-stream, then recovered
            failures = 0
            decoded_this_pass += 1
            if period:
                # Pace like a camera: a frame is "captured" when it is due, never early.
                delay = next_due - self._clock()
                if delay > 0 and self._wait(stop, delay):
                    break
                next_due = max(next_due + period, self._clock() - period)
            yield Frame(img, self.camera_id, seq, time.monotonic(), time.time(),
                        t_video=seq / self.fps if self.is_file and self.fps > 0 else None)
            seq += 1

    def _count_undecoded(self, cap: cv2.VideoCapture, decoded: int) -> None:
        # A file's failed reads show up here too: they are frames declared but not decoded.
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        lost = max(0, declared - decoded)
        if lost:
            self.corrupt += lost
            log.warning("camera %s: %d of %d frames in %s could not be decoded (skipped)",
                        self.camera_id, lost, declared, self.uri)
