"""The camera list provision shows (the /dev/video* nodes, in numeric order) and how a typed
source becomes a config source."""
from __future__ import annotations

from appliance.provision import cameras


def test_video_devices_in_numeric_order(tmp_path):
    assert cameras.video_devices(str(tmp_path / "video*")) == []
    for n in ("10", "2", "0", "1"):
        (tmp_path / f"video{n}").touch()
    (tmp_path / "video-meta").touch()  # not a number: last
    found = cameras.video_devices(str(tmp_path / "video*"))
    assert [p.rsplit("/", 1)[1] for p in found] == ["video0", "video1", "video2", "video10", "video-meta"]


def test_as_source():
    assert cameras.as_source(" /dev/video0 ") == "v4l2:///dev/video0"
    assert cameras.as_source("rtsp://viewer:secret@10.0.0.2/s1") == "rtsp://viewer:secret@10.0.0.2/s1"
    assert cameras.as_source("asset:vtest.avi") == "asset:vtest.avi"
