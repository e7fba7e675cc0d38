"""`appliance ...` subcommands.

Bad input (ApplianceError) becomes one line on stderr and exit status 1, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from appliance import __version__, paths, safemode
from appliance import config as config_mod
from appliance import log as log_setup
from appliance.argtypes import port, positive_int
from appliance.errors import ApplianceError, DataDirBusy
from appliance.times import parse_time

log = logging.getLogger("appliance")


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.pipeline import Pipeline  # heavy imports only for the commands that need them

    warnings: list[str] = []  # files the config names are checked here as in `config check`
    data = paths.data_dir(args.data_dir)
    try:
        cfg = config_mod.load(args.config, paths.assets_dir(), warnings=warnings)
    except ApplianceError as e:
        if not safemode.wanted(args.safe_mode, os.environ):
            raise
        log_setup.setup("INFO")  # the broken config's log level is unknown
        return safemode.run(args.config, data, str(e).splitlines(), web_port=args.web_port)
    log_setup.setup(cfg.log.level)
    for warning in warnings:
        log.warning("config: %s", warning)
    if args.loop:
        for cam in cfg.cameras:
            cam.loop = True  # validated on assignment, like the file
    log.info("appliance %s: data directory %s, config %s", __version__, data, args.config or "built-in demo")
    stop = threading.Event()  # a signal during the start (model loading) stops right after it

    def on_signal(signum, _frame):
        log.info("received %s: stopping after flushing what is in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        pipeline = Pipeline(cfg, data, fast=args.fast, max_frames=args.max_frames, stop_event=stop)
    except DataDirBusy:
        raise
    except ApplianceError as e:  # valid, yet it cannot run (a damaged model file, an unreadable database)
        if not safemode.wanted(args.safe_mode, os.environ):
            raise
        return safemode.run(args.config, data, str(e).splitlines(), reason=safemode.START_FAILED,
                            web_port=args.web_port)
    safemode.remember_good(args.config, data)  # the data dir is ours now (the pipeline holds its lock)
    safemode.leave(data)
    # Services beside the pipeline (uplink, web) are appended to pipeline.services here.
    if cfg.web.enabled:
        from web.analytics import pipeline_hooks
        from web.service import WebService
        pipeline.services.append(WebService(  # the line and zone editor saves to --config, applies live
            cfg, pipeline, data, pipeline.live, port=args.web_port,
            config_path=Path(args.config) if args.config else None, analytics_hooks=pipeline_hooks(pipeline)))
    if cfg.uplink.enabled:
        from appliance.uplink.service import Uplink
        pipeline.services.append(Uplink(cfg, data, pipeline))
    from appliance.control.power import PowerService  # a dry run where there is nothing to control
    pipeline.services.append(PowerService(cfg.power, data, on_change=pipeline.sink.state))
    if os.environ.get("NOTIFY_SOCKET"):  # under systemd (Type=notify); last: READY=1 once all else started
        from appliance.control.systemd import SystemdNotifier
        pipeline.services.append(SystemdNotifier(pipeline))
    pipeline.run()
    from appliance.control.systemd import unexpected_end
    why = unexpected_end(pipeline, args.max_frames)
    if why:  # non-zero, so that systemd's Restart=on-failure starts it again
        log.error("the pipeline ended with no stop asked for (%s); exiting with status 1", why)
        return 1
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    from web.passwd import set_password

    print(set_password(Path(args.config), from_stdin=args.password_stdin), file=sys.stderr)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from appliance.assets import fetch

    dest = paths.assets_dir()  # one cache for every data directory
    groups = ("default", "test") if args.test_assets else ("default",)
    for p in fetch(dest, groups):
        print(p)
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        cfg = config_mod.load(args.file, paths.assets_dir(), files="warn" if args.no_files else "error",
                              warnings=warnings)
    finally:
        for warning in warnings:
            print(f"appliance: warning: {warning}", file=sys.stderr)
    shown = "secrets shown" if args.show_secrets else "secrets masked"
    sys.stdout.write(f"# {args.file}: valid; effective config ({shown}):\n")
    sys.stdout.write(config_mod.dump(cfg, secrets=args.show_secrets))
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **config_mod.Config.model_json_schema()}
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from appliance.detect import load_manifest, run_images
    from appliance.detect.configured import configured_detector
    from appliance.detect.threads import auto_threads

    cfg = config_mod.load(args.config)
    d = cfg.detect
    assets = paths.assets_dir()
    threads = d.threads
    if threads == "auto":
        # A few images do not repay a measurement: what `appliance run` measured with this
        # data dir and model, else every usable core (nothing else competes for them here).
        threads = auto_threads(load_manifest(args.model or d.model, assets), d.backend,
                               paths.data_dir(args.data_dir), measure_now=False)
    detector = configured_detector(cfg, assets, paths.data_dir(args.data_dir), model=args.model,
                                   threshold=args.threshold, all_classes=args.all_classes, threads=threads)
    classifier = None
    if args.classify:  # the flag asks for it whatever classify.enabled says
        from appliance.classify import load_classifier

        classifier = load_classifier(cfg.classify.model, assets, backend=cfg.classify.backend)
    return run_images(args.images, detector, sys.stdout, sys.stderr, classifier=classifier,
                      classify_classes=cfg.classify.classes)


def _parse_box(text: str) -> list[float]:
    """--box x1,y1,x2,y2 in image pixels."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ApplianceError(f"--box: expected x1,y1,x2,y2 (4 numbers, image pixels), got {text!r}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ApplianceError(f"--box {text}: x2 must be greater than x1 and y2 greater than y1")
    return box


def _cmd_classify(args: argparse.Namespace) -> int:
    from appliance.classify import load_classifier
    from appliance.detect.images import read_image

    box = _parse_box(args.box)
    image = read_image(args.image)
    if isinstance(image, str):
        raise ApplianceError(f"{args.image}: {image}")
    c = config_mod.load(args.config).classify
    classifier = load_classifier(args.model or c.model, paths.assets_dir(), backend=c.backend)
    crop = classifier.crop(image, box)
    if crop is None:
        h, w = image.shape[:2]
        cw, ch = min(w, box[2]) - max(0.0, box[0]), min(h, box[3]) - max(0.0, box[1])
        if cw <= 0 or ch <= 0:
            raise ApplianceError(f"--box {args.box}: outside the {w}x{h} image")
        raise ApplianceError(f"--box {args.box}: {cw:.0f}x{ch:.0f} px inside the {w}x{h} image, too small for "
                             f"model {classifier.name} (min_size {classifier.min_size} px, margin included)")
    (prediction,) = classifier.classify([crop])
    print(json.dumps({"image": args.image, "box": box, "classification": classifier.describe(prediction)}))
    return 0


def _parse_since(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError:
        raise ApplianceError(f"--since: expected unix seconds or an ISO 8601 time, got {text!r}") from None


def _cmd_events(args: argparse.Namespace) -> int:
    from appliance.store.db import open_db, query_events

    since = _parse_since(args.since) if args.since is not None else None
    db_file = paths.db_path(paths.data_dir(args.data_dir))
    if not db_file.exists():
        raise ApplianceError(f"no event database at {db_file} (has 'appliance run' used this data dir?)")
    events = query_events(open_db(db_file), since=since, limit=args.limit)
    for e in events:
        if args.json:
            print(json.dumps(e, separators=(",", ":")))
            continue
        when = datetime.fromtimestamp(e["ts"], timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if "state" in e:  # camera, adaptive, power: a state change (docs/events.md)
            print(f"{e['id']:<24} {when}  {e['camera'] or '-':<10} {e['type']:<8} "
                  f"{e['previous']} -> {e['state']}: {e['reason']}")
        elif e["type"] in ("line", "zone"):  # analytics (docs/analytics.md)
            kind = f"{e['label']} · {e['classification']['label']}" if "classification" in e else e["label"]
            what = (f"{e['line']} {e['direction']}" if e["type"] == "line"
                    else f"{e['zone']} {e['action']} occupancy={e['occupancy']}")
            extra = "".join(f" {k}={e[k]}" for k in ("dwell_s", "speed_kmh", "heading_deg") if k in e)
            print(f"{e['id']:<24} {when}  {e['camera']:<10} {e['type']:<6} track={e['track_id']:<5} "
                  f"{kind:<18} {what}{extra}")
        else:
            box = ",".join(f"{v:.0f}" for v in e["box"])
            kind = f"{e['label']} · {e['classification']['label']}" if "classification" in e else e["label"]
            print(f"{e['id']:<24} {when}  {e['camera']:<10} {e['type']:<6} track={e['track_id']:<5} "
                  f"{kind:<18} {e['score']:.2f}  [{box}]")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    _, data, _ = paths.device_defaults(None, args.data_dir)
    status, age = paths.read_status(paths.data_dir(data))
    if args.json:
        print(json.dumps({**status, "age_s": round(age, 1)}))
        return 0
    state = "running" if status.get("running") and age < paths.STATUS_STALE_AFTER_S else "stopped or stale"
    print(f"appliance {status['version']}: {state}, status written {age:.0f} s ago, "
          f"uptime {status['uptime_s']:.0f} s, events stored {status['events_stored']}")
    m = status["model"]
    print(f"model {m['name']} {m['version']} on {m['backend']}/{m['device']}")
    for cam, c in status["cameras"].items():
        state = f"{c['state']} ({c['state_reason']}), " if "state_reason" in c else \
            (f"{c['state']}, " if "state" in c else "")
        print(f"camera {cam}: {state}fps {c['fps']}, inference p50 {c['inference_ms_p50']} ms "
              f"p95 {c['inference_ms_p95']} ms, frames {c['frames']}, dropped {c['dropped']}, "
              f"corrupt {c['corrupt']}, live tracks {c['live_tracks']}")
    for name, svc in status.get("services", {}).items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in svc.items()))
    return 0


def _cmd_selftest(args: argparse.Namespace) -> int:
    from appliance.selftest import run_selftest

    config_path, data, on_device = paths.device_defaults(args.config, args.data_dir)
    if on_device:
        log.info("testing this device's setup: %s, data in %s", config_path, paths.data_dir(data))
    try:
        cfg = config_mod.load(config_path, paths.assets_dir())
    except ApplianceError:
        cfg = None  # the config check reports why; the device's checks still run
    only = {name.strip() for name in args.only.split(",") if name.strip()} if args.only else None
    report = run_selftest(cfg, paths.data_dir(data), config_path=Path(config_path) if config_path else None,
                          timeout_s=args.timeout, only=only)
    print(report.to_json(indent=1) if args.json else report.summary())
    return 0 if report.ok else 1


def _cmd_power_status(args: argparse.Namespace) -> int:
    from appliance.control.power import describe, read_status

    report = read_status(config_mod.load(args.config).power)
    print(json.dumps(report, indent=1) if args.json else describe(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="database, status and lock (default: $APPLIANCE_DATA_DIR or ./data); "
                        "the asset cache is separate (docs/assets.md)")
    p = argparse.ArgumentParser(prog="appliance", description="Edge video-analytics appliance")
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run the pipeline")
    run.add_argument("--config", help="YAML config (default: the built-in demo)")
    run.add_argument("--max-frames", type=positive_int, help="stop each camera after N frames")
    run.add_argument("--fast", action="store_true", help="play files as fast as possible, every frame")
    run.add_argument("--loop", action="store_true", help="play files in a loop (sets cameras[].loop)")
    run.add_argument("--web-port", type=port, default=os.environ.get("APPLIANCE_WEB_PORT") or None,
                     help="dashboard port, overriding web.port; 0 picks a free one "
                          "(default: $APPLIANCE_WEB_PORT, else web.port)")
    run.add_argument("--safe-mode", choices=("auto", "on", "off"),
                     default=os.environ.get("APPLIANCE_SAFE_MODE") or "auto",
                     help="when the config does not validate: start only the dashboard, to fix it there "
                          "(on), or exit with the errors (off); auto: on under systemd ($NOTIFY_SOCKET) "
                          "(default: $APPLIANCE_SAFE_MODE, else auto)")
    run.set_defaults(func=_cmd_run)

    fetch = sub.add_parser("fetch", parents=[common], help="fetch and verify models and media")
    fetch.add_argument("--test-assets", action="store_true", help="also fetch the test-only models")
    fetch.set_defaults(func=_cmd_fetch)

    cfg = sub.add_parser("config", help="config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser(
        "check", help="validate a config file and print the effective config",
        description="Validate a config file the way `appliance run` does, files it names included "
                    "(video files, the model, TLS files), and print the effective config, defaults "
                    "included. Secrets are masked unless --show-secrets.")
    check.add_argument("file")
    check.add_argument("--no-files", action="store_true",
                       help="files the config names that are missing here are warnings, not errors "
                            "(for a config meant for another machine)")
    check.add_argument("--show-secrets", action="store_true",
                       help="print uplink.password, web.password_hash and camera URL passwords as they "
                            "are (the output then loads back to the same config)")
    check.set_defaults(func=_cmd_config_check)
    schema = cfg_sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=_cmd_config_schema)

    det = sub.add_parser("detect", parents=[common], help="detect objects in images (JSON lines)")
    det.add_argument("images", nargs="+")
    det.add_argument("--model", help="model name or model.yaml path (default: from config)")
    det.add_argument("--config", help="YAML config for detector settings")
    det.add_argument("--threshold", type=float, help="minimum score (default: from config)")
    det.add_argument("--all-classes", action="store_true", help="ignore the config's class allow-list")
    det.add_argument("--classify", action="store_true",
                     help="also classify detections of classify.classes with classify.model (from config)")
    det.set_defaults(func=_cmd_detect)

    clf = sub.add_parser("classify", help="classify the object in a box of an image (one JSON line)")
    clf.add_argument("image")
    clf.add_argument("--box", required=True, metavar="X1,Y1,X2,Y2", help="the object's box, image pixels")
    clf.add_argument("--model", help="classifier name or model.yaml path (default: classify.model from config)")
    clf.add_argument("--config", help="YAML config for classifier settings")
    clf.set_defaults(func=_cmd_classify)

    pw = sub.add_parser("passwd", help="set the dashboard password (stores only a salted hash)")
    pw.add_argument("--config", default="/etc/appliance/config.yaml",
                    help="YAML config to write web.password_hash into (default: %(default)s)")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    pw.set_defaults(func=_cmd_passwd)

    power = sub.add_parser("power", help="power modes, temperatures and throttling")
    power_sub = power.add_subparsers(dest="power_command", required=True)
    pst = power_sub.add_parser("status", help="platform, current and available modes, temperatures")
    pst.add_argument("--config", help="YAML config for the power section (default: built-in)")
    pst.add_argument("--json", action="store_true")
    pst.set_defaults(func=_cmd_power_status)

    stt = sub.add_parser("selftest", parents=[common], help="the installer's check: cameras, model, storage, "
                         "broker, clock, heat, dashboard; exit status 0 only when nothing failed")
    stt.add_argument("--config", help="YAML config to test (default: /etc/appliance/config.yaml where it "
                                      "exists, with data in /var/lib/appliance; else the built-in demo)")
    stt.add_argument("--json", action="store_true", help="print the report as JSON")
    stt.add_argument("--timeout", type=float, default=10.0, metavar="S",
                     help="seconds each camera and the broker get to answer (default: %(default)s)")
    stt.add_argument("--only", metavar="CHECKS", help="comma-separated checks to run: mode, config, camera, "
                     "detector, classifier, data_dir, database, disk, uplink, clock, thermal, dashboard")
    stt.set_defaults(func=_cmd_selftest)

    st = sub.add_parser("status", parents=[common], help="what the running appliance last reported")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)

    ev = sub.add_parser("events", parents=[common], help="list stored events")
    ev.add_argument("--since", help="unix seconds or ISO 8601 time; oldest first from then")
    ev.add_argument("--limit", type=positive_int, default=50)
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.set_defaults(func=_cmd_events)

    from appliance.track import cli as track_cli
    track_cli.register(sub)  # appliance track --mot
    from appliance.analytics import cli as analytics_cli
    analytics_cli.register(sub)  # appliance analyze --mot
    from appliance.uplink import cli as uplink_cli
    uplink_cli.register(sub, common)  # appliance uplink status
    from appliance.provision import cli as provision_cli
    provision_cli.register(sub)  # appliance provision
    from appliance.modelstore import cli as model_cli
    model_sub = model_cli.register(sub, common)  # appliance model list|install|activate|rollback
    from appliance.detect import engine_cli
    engine_cli.register(model_sub, common)  # appliance model build (TensorRT engines)
    from appliance.detect import tflite_onnx
    tflite_onnx.register(model_sub, common)  # appliance model convert (the default detector as ONNX)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        log_setup.setup("WARNING")
    try:
        return args.func(args)
    except ApplianceError as e:
        print(f"appliance: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
