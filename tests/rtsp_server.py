"""A real RTSP server for the camera tests: GstRtspServer serving a live test pattern.

Run with Debian's python3 (it has python3-gi; the venv does not):

    /usr/bin/python3 tests/rtsp_server.py [--port N] [--fps F] [--size WxH] [--protocols tcp|udp|all]

It serves rtsp://127.0.0.1:<port>/test as MJPEG over RTP (videotestsrc → jpegenc →
rtpjpegpay: plugins-base and plugins-good only, no patent-encumbered encoder), prints
"READY <port>" on stdout once it listens, and runs until killed. Port 0 picks a free one.
Tests start it with `start_rtsp_server()` below, which also works from the venv python.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/test"


def serve(port: int, fps: int, width: int, height: int, protocols: str = "all") -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=70 "
        "! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)  # one pipeline for every client, like a camera
    lower = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP}
    if protocols in lower:  # a camera that only speaks one transport
        factory.set_protocols(lower[protocols])
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


def start_rtsp_server(port: int = 0, fps: int = 25, size: str = "320x240", protocols: str = "all",
                      timeout_s: float = 15.0) -> tuple[subprocess.Popen, int]:
    """Start the server in its own process group; return (process, port) once it listens."""
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(port), "--fps", str(fps),
         "--size", size, "--protocols", protocols],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        stop_rtsp_server(proc)
        raise RuntimeError(f"rtsp_server did not start within {timeout_s} s")
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        err = proc.stderr.read() if proc.poll() is not None else ""
        stop_rtsp_server(proc)
        raise RuntimeError(f"rtsp_server failed to start: {line.strip()} {err.strip()}")
    return proc, int(line.split()[1])


def stop_rtsp_server(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Kill the server's whole process group (it is its own session leader) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--protocols", choices=("all", "tcp", "udp"), default="all")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.port, args.fps, w, h, args.protocols)


if __name__ == "__main__":
    main()
