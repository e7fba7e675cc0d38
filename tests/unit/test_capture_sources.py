"""Source URIs, backend checks, FFmpeg options per camera, jetson-utils, batched hand-out."""
from __future__ import annotations

import os
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.capture import readers
from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.capture.readers import (
    CaptureSettings,
    FfmpegOptions,
    JetsonReader,
    check_backend,
    csi_pipeline,
    gst_pipeline,
    open_reader,
    opencv_has_gstreamer,
)
from appliance.capture.source import parse_uri
from appliance.config import redact_uri
from appliance.errors import ApplianceError


@pytest.mark.parametrize("uri, kind, target, live", [
    ("csi://0", "csi", "0", True),
    ("csi://1", "csi", "1", True),
    ("gst:videotestsrc ! appsink", "gst", "videotestsrc ! appsink", True),
    ("videotestsrc ! videoconvert ! appsink", "gst", "videotestsrc ! videoconvert ! appsink", True),
    ("jetson:csi://0", "jetson", "csi://0", True),
    ("jetson:rtsp://10.0.0.5/s", "jetson", "rtsp://10.0.0.5/s", True),
    ("rtsp://10.0.0.5/s", "rtsp", "rtsp://10.0.0.5/s", True),
    ("v4l2:///dev/video0", "v4l2", "/dev/video0", True),
    ("/v/a.mp4", "file", "/v/a.mp4", False),
])
def test_parse_live_uris(uri, kind, target, live):
    spec = parse_uri(uri)
    assert (spec.kind, spec.target, spec.live) == (kind, target, live)


@pytest.mark.parametrize("uri, message", [
    ("csi://front", "expected csi://N"),
    ("jetson:", "expected jetson:URI"),
    ("gst:", "expected gst:PIPELINE"),
])
def test_parse_rejects_bad_live_uris(uri, message):
    with pytest.raises(ApplianceError, match=message):
        parse_uri(uri)


def test_redact_uri_hides_the_password_only():
    assert redact_uri("rtsp://viewer:s3cret@10.0.0.5:554/s1") == "rtsp://viewer:***@10.0.0.5:554/s1"
    assert redact_uri("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


def test_gstreamer_pipelines_end_in_a_bgr_appsink():
    p = csi_pipeline("1", 1280, 720, 60)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1280,height=720,framerate=60/1" in p and p.endswith("sync=false")
    assert "format=BGR ! appsink" in csi_pipeline("0")
    assert "width=1920,height=1080,framerate=30/1" in csi_pipeline("0")  # defaults
    assert gst_pipeline("videotestsrc").endswith("video/x-raw,format=BGR ! " + readers.APPSINK)
    assert gst_pipeline("videotestsrc ! appsink name=x") == "videotestsrc ! appsink name=x"


def test_this_opencv_reports_its_gstreamer_support_truthfully():
    built = "GStreamer:                   YES" in cv2.getBuildInformation()
    assert opencv_has_gstreamer() == built


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_missing_gstreamer_is_a_clear_startup_error(monkeypatch):
    monkeypatch.setattr(readers, "jetson_utils_module", lambda: None)
    with pytest.raises(ApplianceError) as e:
        check_backend("north", parse_uri("csi://0"))
    msg = str(e.value)
    assert msg.startswith("camera north: csi source needs OpenCV built with GStreamer")
    assert "jetson-utils" in msg and "opencv-python-headless" in msg
    with pytest.raises(ApplianceError, match="camera pipe: gst source needs OpenCV built with GStreamer"):
        check_backend("pipe", parse_uri("gst:videotestsrc"))
    with pytest.raises(ApplianceError, match="camera j: jetson: source needs jetson-utils"):
        check_backend("j", parse_uri("jetson:csi://0"))
    check_backend("r", parse_uri("rtsp://x/y"))  # FFmpeg is there: no error


class FakeJetsonUtils(types.ModuleType):
    """jetson-utils as documented in jetson-inference docs/aux-streaming.md:
    videoSource(uri, argv=[...]); Capture(format=, timeout=ms) returns a CUDA image, or
    None on timeout; cudaToNumpy() maps it; cudaDeviceSynchronize(); Close()."""

    def __init__(self, frames):
        super().__init__("jetson_utils")
        self.frames = list(frames)
        self.created = []
        self.closed = 0
        module = self

        class videoSource:  # noqa: N801 (the real class name)
            def __init__(self, uri, argv=()):
                module.created.append((uri, list(argv)))

            def Capture(self, format="rgb8", timeout=1000):  # noqa: N802,A002
                assert format == "rgb8" and timeout > 0
                return module.frames.pop(0) if module.frames else None

            def Close(self):  # noqa: N802
                module.closed += 1

        self.videoSource = videoSource
        self.cudaToNumpy = lambda img: img
        self.cudaDeviceSynchronize = lambda: None


def test_jetson_utils_reader_imitates_the_documented_api(monkeypatch):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    fake = FakeJetsonUtils([rgb])
    monkeypatch.setitem(sys.modules, "jetson_utils", fake)
    settings = CaptureSettings(width=1280, height=720, fps=30, read_timeout_s=2)
    reader = open_reader("j", parse_uri("jetson:csi://0"), settings)
    assert fake.created == [("csi://0", ["--input-width=1280", "--input-height=720", "--input-rate=30"])]
    ok, bgr = reader.read()
    assert ok and bgr.shape == (2, 3, 3) and bgr[0, 0, 2] == 200 and bgr[0, 0, 0] == 0  # now BGR
    assert reader.read() == (False, None)  # Capture() timed out
    reader.release()
    assert fake.closed == 1
    assert isinstance(reader, JetsonReader)
    check_backend("j", parse_uri("jetson:csi://0"))  # importable now: no error


def test_ffmpeg_options_uniform_cameras_set_the_variable_once(monkeypatch):
    monkeypatch.setattr(readers, "_USER_FFMPEG_OPTIONS", None)
    monkeypatch.delenv(readers.FFMPEG_ENV, raising=False)
    opts = FfmpegOptions()
    opts.register("a", "rtsp_transport;tcp")
    opts.register("b", "rtsp_transport;tcp")
    with opts.applied("a"):
        assert os.environ[readers.FFMPEG_ENV] == "rtsp_transport;tcp"
        with opts.applied("b"):  # no lock held: opens of both cameras may overlap
            assert os.environ[readers.FFMPEG_ENV] == "rtsp_transport;tcp"


def test_ffmpeg_options_differing_cameras_take_turns(monkeypatch):
    monkeypatch.setattr(readers, "_USER_FFMPEG_OPTIONS", None)
    monkeypatch.delenv(readers.FFMPEG_ENV, raising=False)
    opts = FfmpegOptions()
    opts.register("a", "rtsp_transport;tcp")
    opts.register("b", "rtsp_transport;udp")
    seen = []

    def open_b():
        with opts.applied("b"):
            seen.append(os.environ[readers.FFMPEG_ENV])

    with opts.applied("a"):
        t = threading.Thread(target=open_b)
        t.start()
        time.sleep(0.1)
        assert seen == [] and os.environ[readers.FFMPEG_ENV] == "rtsp_transport;tcp"
    t.join(2)
    assert seen == ["rtsp_transport;udp"]


def test_user_set_ffmpeg_options_win(monkeypatch):
    monkeypatch.setattr(readers, "_USER_FFMPEG_OPTIONS", "rtsp_transport;udp")
    monkeypatch.setenv(readers.FFMPEG_ENV, "rtsp_transport;udp")
    opts = FfmpegOptions()
    opts.register("a", "rtsp_transport;tcp")
    with opts.applied("a"):
        assert os.environ[readers.FFMPEG_ENV] == "rtsp_transport;udp"


def _frame(cam: str, seq: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), cam, seq, time.monotonic(), time.time())


def test_hub_batch_takes_the_oldest_of_every_ready_camera():
    hub = FrameHub()
    for cam in "abc":
        hub.add_camera(cam, latest_wins=True, capacity=2)
    hub.put(_frame("a", 0))
    hub.put(_frame("a", 1))
    hub.put(_frame("c", 0))
    batch = hub.get_batch(0.1)
    assert sorted((f.camera_id, f.seq) for f in batch) == [("a", 0), ("c", 0)]
    hub.put(EndOfStream("c"))
    batch = hub.get_batch(0.1)
    assert sorted((type(i).__name__, i.camera_id) for i in batch) == [("EndOfStream", "c"), ("Frame", "a")]
    assert batch[0].camera_id == "c"  # the leading camera rotates: b (empty) led this time
    assert hub.get_batch(0.05) == []


def test_unopenable_live_source_is_retryable_not_fatal(tmp_path):
    # Nothing listens on this port: the connection is refused at once.
    settings = CaptureSettings(open_timeout_s=2, read_timeout_s=2)
    with pytest.raises(readers.SourceUnavailable, match="cannot open rtsp://127.0.0.1:9/x over TCP"):
        open_reader("r", parse_uri("rtsp://127.0.0.1:9/x"), settings)


def test_v4l2_device_that_is_absent_is_retryable(tmp_path):
    with pytest.raises(readers.SourceUnavailable, match="cannot open V4L2 /dev/video"):
        open_reader("v", parse_uri("v4l2:///dev/video97"), CaptureSettings(width=640, height=480))
    assert not Path("/dev/video97").exists()
