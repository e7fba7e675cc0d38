"""`appliance analyze --mot DET_TXT --config FILE --fps F`: the tracker and camera `mot`'s
lines and zones on MOTChallenge detections (appliance/analytics/mot.py)."""
from __future__ import annotations

import argparse
import sys

from appliance.argtypes import positive_float


def _cmd_analyze(args: argparse.Namespace) -> int:
    from appliance.analytics import mot

    return mot.main(args.mot, args.config, args.fps, args.size, sys.stdout)


def register(sub) -> None:
    ana = sub.add_parser("analyze", help="run the tracker and camera `mot`'s lines and zones on MOTChallenge "
                                         "detections, print the counts (one JSON object)")
    ana.add_argument("--mot", required=True, metavar="DET_TXT", help="MOTChallenge det.txt")
    ana.add_argument("--config", required=True, help="YAML config with a camera `mot` (its lines, zones; track)")
    ana.add_argument("--fps", type=positive_float, required=True, help="the sequence's frame rate (TUD: 25)")
    ana.add_argument("--size", metavar="WxH", help="frame size in pixels (default: camera mot's width and height)")
    ana.set_defaults(func=_cmd_analyze)
