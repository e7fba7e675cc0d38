"""The self-test's checks of what the config names: safe mode, the config itself, each
camera, the detector and the classifier. Each returns a Check (report.py) with the value it
measured and, unless it passed, a hint saying what to do. system.py has the device's checks
(storage, clock, temperatures, dashboard), mqtt.py the uplink's.
"""
from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance import config as config_mod
from appliance import paths
from appliance.config import CameraConfig, Config, redact_uri
from appliance.errors import ApplianceError
from appliance.selftest.report import Check, failed, passed, warned

SAFE_MODE_FILE = "safe-mode.json"  # written by safe mode (appliance/safemode.py) while it holds
CAMERA_FRAMES = 30  # frames read to measure a camera, at most
CAMERA_MEASURE_S = 2.0  # ... or this long after the first frame, whichever comes first
DETECT_RUNS = 10  # timed inferences, at most
DETECT_BUDGET_S = 3.0  # ... or this long

# Rough time per frame the default detector (SSD MobileNet v2 int8, 300x300) should reach,
# by platform and where it runs, with detect.threads at its best. From `scripts/bench
# pipeline` on a 2-core x86 box (19 ms on 2 threads) and published figures for the others;
# a board more than twice as slow is worth a look (power mode, heat, a busy CPU).
EXPECTED_MS = {
    ("any", "edgetpu"): 15.0,
    ("jetson", "cuda"): 15.0,
    ("jetson", "cpu"): 35.0,
    ("raspberry-pi-5", "cpu"): 45.0,
    ("raspberry-pi-4", "cpu"): 110.0,
    ("raspberry-pi", "cpu"): 150.0,  # older or unknown Pi
    ("linux-x86_64", "cpu"): 40.0,
    ("linux-aarch64", "cpu"): 90.0,
}
EXPECTED_MODELS = ("ssd-mobilenet-v2-coco",)  # manifest names
# The same detector as float ONNX (what a Jetson runs on TensorRT, Dockerfile.l4t's image):
# only its GPU figure applies; on a CPU it is a float model, not the int8 one measured above.
EXPECTED_ONNX_MODELS = ("ssd-mobilenet-v2-coco-onnx",)
SLOWER_THAN_EXPECTED = 2.0


@dataclass
class Context:
    """What one run of the self-test shares between its checks."""

    cfg: Config
    data_dir: Path
    assets_dir: Path
    config_path: Path | None
    timeout_s: float
    frame: np.ndarray | None = None  # a real frame from the first camera that gave one
    camera_fps: dict[str, float] = field(default_factory=dict)  # measured, per camera

    def running(self) -> dict | None:
        """The running appliance's status.json (fresh, and running), else None."""
        try:
            status, age = paths.read_status(self.data_dir)
        except ApplianceError:
            return None
        return status if status.get("running") and age < paths.STATUS_STALE_AFTER_S else None


# -- safe mode and the config ---------------------------------------------------------------


def check_mode(data_dir: Path) -> Check:
    """Safe mode (the config failed validation at boot, or the start failed) is a failure:
    no camera runs."""
    marker = data_dir / SAFE_MODE_FILE
    if not marker.exists():
        return passed("mode", "normal")
    try:
        info = json.loads(marker.read_text())
        errors = [str(e) for e in info.get("errors", [])] if isinstance(info, dict) else []
        config, since, reason = ((info.get("config"), info.get("since"), info.get("reason"))
                                 if isinstance(info, dict) else (None, None, None))
    except (OSError, ValueError) as e:
        errors, config, since, reason = [f"{marker}: unreadable: {e}"], None, None, None
    first = errors[0] if errors else "the config failed validation at boot"
    return failed(
        "mode", f"SAFE MODE: {first}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
        f"the appliance started in safe mode (no cameras, no uplink) because "
        f"{reason or 'the config does not validate'} ({config or 'its config'}): fix it (or what the error "
        "names) on the dashboard's config page, or edit the file and check it with 'appliance config "
        "check', then restart the appliance", errors=errors, config=config, since=since, reason=reason)


def check_config(config_path: Path | None, assets_dir: Path) -> tuple[Check, Config | None]:
    """The file as `appliance run` would load it now, files it names included."""
    if config_path is None:
        return warned("config", "no config file: the built-in demo config",
                      "pass --config /etc/appliance/config.yaml to test the device's own config"), None
    warnings: list[str] = []
    try:
        cfg = config_mod.load(config_path, assets_dir, warnings=warnings)
    except ApplianceError as e:
        lines = str(e).splitlines()
        return failed("config", lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                      "fix each line (file: key: problem), then run the self-test again; the other checks "
                      "use the config the appliance runs with", errors=lines, file=str(config_path)), None
    if warnings:
        return warned("config", f"{config_path}: valid, {len(warnings)} warning(s): {warnings[0]}",
                      "read the warnings: the appliance runs, but something the config names is missing",
                      warnings=warnings, file=str(config_path)), cfg
    return passed("config", f"{config_path}: valid", file=str(config_path)), cfg


# -- cameras ----------------------------------------------------------------------------------


@dataclass
class _Grab:
    """Frames read by a reader thread; the check reads them from its own thread."""

    shapes: list[tuple[int, int]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    first: np.ndarray | None = None
    error: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def add(self, img: np.ndarray) -> None:
        if self.first is None:
            self.first = img
        self.shapes.append((img.shape[1], img.shape[0]))
        self.times.append(time.monotonic())
        if len(self.times) >= CAMERA_FRAMES or self.times[-1] - self.times[0] >= CAMERA_MEASURE_S:
            self.stop.set()


def _read_live(ctx: Context, cam: CameraConfig, grab: _Grab) -> None:
    from appliance.capture.readers import FFMPEG, CaptureSettings, SourceUnavailable, open_reader, rtsp_options
    from appliance.capture.source import parse_uri, valid_image

    settings = CaptureSettings(rtsp_transport=cam.rtsp_transport, open_timeout_s=min(cam.open_timeout_s, ctx.timeout_s),
                               read_timeout_s=cam.stall_timeout_s, width=cam.width, height=cam.height, fps=cam.fps,
                               fourcc=cam.fourcc or "")
    spec = parse_uri(cam.source, ctx.assets_dir)
    try:
        if spec.kind == "rtsp":
            FFMPEG.register(cam.id, rtsp_options(settings))
        reader = open_reader(cam.id, spec, settings)
    except (SourceUnavailable, ApplianceError) as e:
        grab.error = str(e)
        grab.done.set()
        return
    try:
        while not grab.stop.is_set():
            ok, img = reader.read()
            if ok and valid_image(img):
                grab.add(img)
            elif not ok:
                grab.error = "the connection opened, then a read failed"
                break
    finally:
        reader.release()
        grab.done.set()


def _read_file(ctx: Context, cam: CameraConfig, grab: _Grab) -> float:
    from appliance.capture.source import VideoSource

    src = VideoSource(cam.id, cam.source, ctx.assets_dir, realtime=False)
    try:
        src.open()
        for frame in src.frames(grab.stop, max_frames=CAMERA_FRAMES):
            grab.add(frame.image)
    except ApplianceError as e:
        grab.error = str(e)
    finally:
        src.close()
        grab.done.set()
    return src.fps


def _live_hint(kind: str) -> str:
    return {
        "rtsp": "check the camera's address, port and stream path, the user and password in the URL, that "
                "it is powered and on this network (ping it), and cameras[].rtsp_transport (tcp/udp); try "
                "the URL in VLC from a laptop on the same network",
        "v4l2": "check that the device exists (ls /dev/video*), that the appliance user is in group video, "
                "and that no other program holds the camera",
        "csi": "check the ribbon cable and the sensor id, and that nvargus-daemon runs "
               "(sudo systemctl restart nvargus-daemon)",
    }.get(kind, "check the source in cameras[].source and that the camera is connected")


def check_camera(ctx: Context, cam: CameraConfig) -> Check:
    """The camera delivers frames within the timeout; the measured resolution and rate."""
    from appliance.capture.readers import check_backend
    from appliance.capture.source import parse_uri

    name, shown = f"camera:{cam.id}", redact_uri(cam.source)
    try:
        spec = parse_uri(cam.source, ctx.assets_dir)
        if spec.live:
            check_backend(cam.id, spec)
    except ApplianceError as e:
        return failed(name, str(e), "this source needs a capture backend this device lacks; "
                      "see docs/installer-guide.md", source=shown)
    grab = _Grab()
    native_fps = 0.0
    if spec.live:
        threading.Thread(target=_read_live, args=(ctx, cam, grab), name=f"selftest-{cam.id}", daemon=True).start()
    else:
        native_fps = _read_file(ctx, cam, grab)
    deadline = time.monotonic() + ctx.timeout_s
    while not grab.done.wait(0.05) and not grab.stop.is_set() and time.monotonic() < deadline:
        pass
    grab.stop.set()  # a reader stuck in a backend call is left behind; it stops when the call returns
    grab.done.wait(0.5)
    if not grab.times:
        running = ctx.running()
        seen = (running or {}).get("cameras", {}).get(cam.id, {})
        if seen.get("state") == "streaming":  # a V4L2/CSI device is held by the running appliance
            return passed(name, f"{shown}: in use by the running appliance, streaming at {seen.get('fps', 0)} fps",
                          source=shown, fps=seen.get("fps"), from_running_appliance=True)
        why = grab.error or f"no frame within {ctx.timeout_s:g} s"
        return failed(name, f"{shown}: {why}", _live_hint(spec.kind) if spec.live else
                      "check the file's path and that it is a video OpenCV can decode", source=shown)
    if ctx.frame is None:
        ctx.frame = grab.first
    w, h = grab.shapes[-1]
    span = grab.times[-1] - grab.times[0]
    fps = (len(grab.times) - 1) / span if spec.live and span > 0 else native_fps
    ctx.camera_fps[cam.id] = fps
    detail = {"source": shown, "width": w, "height": h, "fps": round(fps, 1), "frames": len(grab.times)}
    how = "measured" if spec.live else "the file's rate"
    value = f"{w}x{h} at {fps:.1f} fps ({how}, {len(grab.times)} frames)"
    wanted = [f"{cam.width or w}x{cam.height or h}"] if (cam.width or cam.height) and \
        (cam.width or w, cam.height or h) != (w, h) else []
    if spec.live and cam.fps and fps < 0.8 * cam.fps:
        wanted.append(f"{cam.fps:g} fps")
    if wanted:
        return warned(name, f"{value}; asked for {' at '.join(wanted)}",
                      "the camera gives less than cameras[] asks: set the camera's own stream settings, or "
                      "cameras[].width/height/fps/fourcc to what it supports (fourcc MJPG for USB cameras)",
                      **detail)
    return passed(name, value, **detail)


# -- models -----------------------------------------------------------------------------------


def platform_key(power_cfg) -> str:
    """"jetson", "raspberry-pi-5", "linux-x86_64", ...: the EXPECTED_MS row of this device."""
    from appliance.control.power_backends import detect

    backend = detect(power_cfg)
    if backend.platform == "raspberry-pi":
        for n in ("5", "4"):
            if backend.model.startswith(f"Raspberry Pi {n}"):
                return f"raspberry-pi-{n}"
        return "raspberry-pi"
    if backend.platform == "jetson":
        return "jetson"
    return f"linux-{platform.machine()}"


def expected_ms(model: str, plat: str, device: str) -> float | None:
    if model in EXPECTED_ONNX_MODELS:
        return EXPECTED_MS.get((plat, device)) if device == "cuda" else None
    if model not in EXPECTED_MODELS:
        return None
    return EXPECTED_MS.get(("any", device)) or EXPECTED_MS.get((plat, device))


def _timed(run, budget_s: float = DETECT_BUDGET_S, runs: int = DETECT_RUNS) -> float:
    """Median milliseconds of run(), after one untimed warm-up."""
    run()
    times: list[float] = []
    end = time.monotonic() + budget_s
    while len(times) < runs and (len(times) < 3 or time.monotonic() < end):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _test_image(ctx: Context, width: int = 640, height: int = 480) -> tuple[np.ndarray, str]:
    if ctx.frame is not None:
        return ctx.frame, "a camera frame"
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8), "a noise image (no camera frame)"


def check_detector(ctx: Context) -> Check:
    from appliance.detect import load_manifest
    from appliance.detect.configured import configured_detector
    from appliance.detect.threads import auto_threads
    from appliance.modelstore.store import ModelStore

    d = ctx.cfg.detect
    try:
        # The model `appliance run` starts with: the store's active version (intact), else detect.model.
        store = ModelStore(ctx.data_dir)
        active = store.active()
        model = str(store.verify(active)) if active is not None else d.model
        threads = d.threads
        if threads == "auto":  # what `appliance run` measured for this data dir, else every core
            threads = auto_threads(load_manifest(model, ctx.assets_dir), d.backend, ctx.data_dir, measure_now=False)
        det = configured_detector(ctx.cfg, ctx.assets_dir, ctx.data_dir, model=model, threads=threads)
        image, what = _test_image(ctx)
        ms = _timed(lambda: det.detect([image]))
    except ApplianceError as e:
        return failed("detector", str(e).splitlines()[0], "run 'appliance fetch' for missing model files; check "
                      "detect.model and detect.backend (docs/config.md)", error=str(e))
    be = det.backend
    plat = platform_key(ctx.cfg.power)
    expect = expected_ms(det.name, plat, be.device)
    detail = {"model": det.name, "version": det.version, "backend": be.name, "device": be.device,
              "threads": be.threads, "ms_per_frame": round(ms, 1), "expected_ms": expect, "platform": plat,
              "input": what}
    value = (f"{det.name} on {be.name}/{be.device}, {be.threads} thread(s): {ms:.1f} ms per frame "
             f"({1000.0 / ms:.0f} fps)" + (f"; about {expect:g} ms expected on {plat}" if expect else ""))
    if expect and ms > SLOWER_THAN_EXPECTED * expect:
        return warned("detector", value, "much slower than this platform should be: check the power mode "
                      "('appliance power status'), heat and throttling, and for other busy processes (top)",
                      **detail)
    need = sum(ctx.camera_fps.values())
    stride = ctx.cfg.adaptive.max_stride if ctx.cfg.adaptive.enabled else ctx.cfg.adaptive.min_stride
    if need and 1000.0 / ms * stride < need:
        return warned("detector", f"{value}; the cameras deliver {need:.0f} fps in all",
                      f"the detector cannot keep up even at stride {stride}: frames will be dropped. Fewer or "
                      "slower cameras, a faster power mode, an accelerator, or adaptive.max_stride higher",
                      **detail, cameras_fps=round(need, 1))
    return passed("detector", value, **detail)


def check_classifier(ctx: Context) -> Check:
    from appliance.classify import load_classifier

    c = ctx.cfg.classify
    if not c.enabled:
        return passed("classifier", "classify.enabled is false: not used")
    try:
        clf = load_classifier(c.model, ctx.assets_dir, backend=c.backend)
        image, _ = _test_image(ctx)
        h, w = image.shape[:2]
        crop = clf.crop(image, [w * 0.25, h * 0.25, w * 0.75, h * 0.75])
        ms = _timed(lambda: clf.classify([crop]), budget_s=1.0) if crop is not None else None
    except ApplianceError as e:
        return failed("classifier", str(e).splitlines()[0],
                      "run 'appliance fetch' for missing model files, or set classify.enabled: false to run "
                      "without classification", error=str(e))
    value = f"{clf.name} {clf.version} on {clf.backend.name}/{clf.backend.device}" + (
        f": {ms:.1f} ms per crop" if ms is not None else "")
    return passed("classifier", value, model=clf.name, version=clf.version, backend=clf.backend.name,
                  device=clf.backend.device, ms_per_crop=None if ms is None else round(ms, 1))
