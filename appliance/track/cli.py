"""`appliance track --mot DET_TXT --fps F`: the tracker on MOTChallenge detections."""
from __future__ import annotations

import argparse
import sys

from appliance import config as config_mod
from appliance.argtypes import positive_float, positive_int
from appliance.errors import ApplianceError


def _cmd_track(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from appliance.config.loader import error_lines
    from appliance.track import mot

    if args.max_age is not None:
        raise ApplianceError("--max-age: replaced by --max-age-s, in seconds, not frames (frames / --fps)")
    track = config_mod.load(args.config).track if args.config else config_mod.TrackConfig()
    overrides = {k: v for k, v in (("max_age_s", args.max_age_s), ("min_hits", args.min_hits),
                                   ("iou_threshold", args.iou_threshold)) if v is not None}
    try:
        track = config_mod.TrackConfig(**{**track.model_dump(), **overrides})
    except ValidationError as e:  # an override out of range: name the option
        lines = (line.split(": ", 1) for line in error_lines(e))
        raise ApplianceError("\n".join(f"--{k.replace('_', '-')}: {m}" for k, m in lines)) from None
    high = mot.MOT_HIGH_THRESHOLD if args.high_threshold is None else args.high_threshold
    return mot.main(args.mot, sys.stdout, args.fps, track, high)


def register(sub) -> None:
    trk = sub.add_parser("track", help="run the tracker on MOTChallenge detections, print MOT tracks")
    trk.add_argument("--mot", required=True, metavar="DET_TXT", help="MOTChallenge det.txt")
    trk.add_argument("--fps", required=True, type=positive_float, help="the sequence's frame rate "
                     "(MOT15 TUD: 25); turns frames into the tracker's seconds")
    trk.add_argument("--config", help="YAML config whose `track` section to use (default: the defaults)")
    trk.add_argument("--max-age-s", type=float, help="override track.max_age_s")
    trk.add_argument("--min-hits", type=positive_int, help="override track.min_hits")
    trk.add_argument("--iou-threshold", type=float, help="override track.iou_threshold")
    trk.add_argument("--high-threshold", type=float,
                     help="score from which a detection may start a track (default: 0.9, "
                          "for the MOT15 files' saturated Faster R-CNN scores)")
    trk.add_argument("--max-age", help=argparse.SUPPRESS)  # renamed: say so
    trk.set_defaults(func=_cmd_track)
