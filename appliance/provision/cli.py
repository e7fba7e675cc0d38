"""`appliance provision`: the argparse part (registered by appliance/cli.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from appliance import paths
from appliance.errors import ApplianceError

DEFAULT_CONFIG = str(paths.DEVICE_CONFIG)
DEFAULT_DATA_DIR = str(paths.DEVICE_DATA_DIR)


def _cmd_provision(args: argparse.Namespace) -> int:
    from appliance.provision import answers as answers_mod
    from appliance.provision import cameras, flow, prompts

    config_path = Path(args.config).absolute()
    data_dir = Path(args.data_dir or os.environ.get("APPLIANCE_DATA_DIR") or DEFAULT_DATA_DIR).absolute()
    opt = flow.Options(config_path=config_path, data_dir=data_dir, assets_dir=paths.assets_dir(),
                       start=not args.no_start, selftest=not args.no_selftest, timeout_s=args.timeout)
    if args.answers:
        try:
            answers = answers_mod.load(args.answers)
        except ApplianceError as e:  # before anything was touched: say so, and what to do
            raise ApplianceError(f"{e}\n  fix: correct or remove what the lines above name (the keys: "
                                 "docs/installer-guide.md, \"An answers file\"), then run provision again; "
                                 f"nothing was changed ({config_path} is as it was)") from None
    else:
        if not sys.stdin.isatty():
            raise ApplianceError("provision: standard input is not a terminal; give the answers in a file: "
                                 "--answers FILE (docs/installer-guide.md)")

        def try_camera(cam_id: str, source: str) -> str:
            t = cameras.test_camera(cam_id, cameras.as_source(source), data_dir / "provision", args.timeout)
            return f"{t.width}x{t.height}, snapshot saved to {t.snapshot}: look at it"

        answers = prompts.ask_answers(prompts.Terminal(), devices=cameras.video_devices(), try_camera=try_camera)
    outcome = flow.provision(answers, opt, sys.stdout)
    return 0 if outcome.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provision", help="the installer's flow: write this device's config, start it, self-test",
        description="Asks for (or reads from --answers) the device id, cameras, detector, MQTT broker, dashboard "
                    "password and power policy; tests the cameras and the broker; writes the config atomically "
                    "(the previous one kept as .bak); enables and restarts appliance.service; runs the "
                    "self-test. A failure before the write leaves the previous config as it was.")
    p.add_argument("--data-dir", help="the appliance's data directory: snapshots and the self-test report go "
                                      f"there (default: $APPLIANCE_DATA_DIR, else {DEFAULT_DATA_DIR})")
    p.add_argument("--answers", metavar="FILE", help="YAML/JSON answers, for fleets (docs/installer-guide.md)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="the config to write (default: %(default)s)")
    p.add_argument("--no-start", action="store_true", help="do not enable or start appliance.service")
    p.add_argument("--no-selftest", action="store_true", help="do not run the self-test at the end")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds each camera and the broker get to answer (default: %(default)s)")
    p.set_defaults(func=_cmd_provision)
