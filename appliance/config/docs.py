"""Writes docs/config.md from the config models: every key, its type, range, default and
meaning come from the models (Field descriptions), the prose around the tables from here.

    python -m appliance.config.docs            # rewrite docs/config.md
    python -m appliance.config.docs --check    # exit 1 when docs/config.md is stale

tests/unit/test_config_docs.py fails when docs/config.md is not what this writes.
"""
from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from appliance.config.base import DocHints
from appliance.config.describe import describe, is_model, is_union, members, unwrap
from appliance.config.root import Config

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"

INTRO = """\
# Config reference

<!-- Generated from appliance/config/ by `python -m appliance.config.docs`; edit there, not here. -->

One YAML file: `/etc/appliance/config.yaml` on a device, given with `--config`. Every
key is optional. Anything left out takes the default below, so an empty file, or no
file, runs the built-in demo. Unknown keys, wrong types, out-of-range values (and NaN
or infinity for any number), keys given twice and broken rules between keys stop the
appliance at start with a message that names the file and the key, one line for each
problem in the file:

```
appliance: error: /etc/appliance/config.yaml: detect.threshold: expected a number, got str 'high'
/etc/appliance/config.yaml: cameras[0].loop: expected true or false, got str 'yes please'
```

Check a file before installing it with `appliance config check FILE`. It validates the
file the way `appliance run` does and prints the effective config, defaults included;
that output loads back to the same config. The files the config names are checked
too: a camera's video file (`asset:` names in the asset cache), the model (its
`model.yaml`, its weights, and `detect.classes` against its labels) and the uplink's TLS
files. For a config meant for another machine, `--no-files` turns the files missing
here into warnings. Secrets (`uplink.password`, `web.password_hash`, passwords in
camera URLs) are printed as `***` unless `--show-secrets` is given; they are masked the
same way on the dashboard's effective config and in the MQTT `config/get` reply.
`appliance config schema` prints the JSON Schema of the file, and
docs/config.example.yaml is an example that sets every section.

A key that is not set (none below) is `null` in the printed config; `""` reads the
same.
"""

# Prose before and after each section's table, and the section's heading.
SECTIONS: list[tuple[str, str, str, str]] = [
    ("device", "`device`", "", ""),
    ("cameras", "`cameras` (a list)", "", """\
Default: one camera `demo` with source `asset:vtest.avi`, a counting line `walkway` across
the pavement and a zone `junction` where it meets the road (docs/analytics.md).

A file that cannot be opened stops the start with `camera <id>: ...`. A live camera never
does: its supervisor connects in the background and reconnects after failures for as
long as the appliance runs, and its state (`connecting`, `streaming`, `stalled`,
`failed`) is in `appliance status`, in the metric `appliance_camera_state` and in
`camera` events (docs/events.md). A backend that is missing on this machine (`csi://` or
`gst:` without OpenCV's GStreamer support, `jetson:` without jetson-utils) is a startup
error that says so.

RTSP options: OpenCV passes FFmpeg options through one process-wide environment
variable, `OPENCV_FFMPEG_CAPTURE_OPTIONS`, read when a capture opens. When all RTSP
cameras use the same transport it is set once; when they differ, connection attempts
take turns so each sees its own, and a camera whose connection hangs can then delay
another's reconnection by up to its `open_timeout_s` (streaming cameras are not
affected). If you set `OPENCV_FFMPEG_CAPTURE_OPTIONS` yourself, it wins and
`rtsp_transport` is not applied.
"""),
    ("detect", "`detect`", "", ""),
    ("track", "`track` (SORT)", "", ""),
    ("classify", "`classify` (the type of each tracked vehicle; appliance/classify/, docs/classify.md)", "", """\
A track of `classes` is classified from its first detection, before it is confirmed: one
crop a frame until `min_votes` have been asked for, then one every `interval_frames`
frames, on crops worth it (at least the model's `min_size`, not cut by the frame's edge),
until its leading type has `min_votes` votes and `min_share` of them; then never again, so
the type does not flicker. A type decided by confirmation is in the track's `new` event.
A classifier that cannot be loaded (its model missing) leaves the appliance running
without classification: one log line, `classify.state: unavailable` in the status and on
the dashboard, and a warning from `appliance config check`.
"""),
    ("events", "`events`", "", ""),
    ("snapshots", "`snapshots` (the best crop of the tracks worth a look; appliance/events/snapshots.py)", "", """\
A snapshot is a JPEG of a track's best crop (the largest, sharpest and least cut by the
frame edge it had), written to `<data dir>/snapshots/<camera>-<track id>.jpg` when the
track ends and named in its `end` event (`snapshot`, docs/events.md). The uplink sends it
after the event, from bandwidth to spare (docs/mqtt.md, "Snapshots"); the dashboard
shows it in the events table. Written, removed and failed snapshots are counted
(`appliance_snapshots_saved_total{reason}`, `appliance_snapshots_removed_total`,
`appliance_snapshots_failed_total{reason}`). The crops show people: `none` keeps no
picture on the device and sends none.
"""),
    ("store", "`store`", "", ""),
    ("log", "`log`", "", ""),
    ("web", "`web` (the dashboard, /healthz, /metrics; docs/dashboard.md)", "", ""),
    ("adaptive", "`adaptive` (detection stride per camera; appliance/control/adaptive.py)", """\
Each camera is handled at its target rate by detecting only every n-th frame (the
stride) when the detector cannot keep up; the frames between are taken from the camera
but not detected, and the tracker spans the gap. The models the appliance ships have a
fixed input size, so the stride is the knob, not the input size. Every change is logged
(`adaptive: camera X: stride 1 -> 2 (...)`), stored as an `adaptive` event and exported
(`appliance_adaptive_stride`, `appliance_adaptive_changes_total`).
""", ""),
    ("power", "`power` (power modes and thermal; appliance/control/power.py)", """\
`appliance power status [--json] [--config FILE]` shows what the manager sees: the
platform, the current and available modes, temperatures, throttling and rail power.
Without the hardware or its tools (no `nvpmodel`, no cpufreq, a container) the manager
is a dry run: it reads what it can, says why it cannot act, and only logs the changes it
would make. It never stops the pipeline.
""", """\
Changing modes needs root (nvpmodel, writing cpufreq governors). A change that fails
is logged once and shown as `error` in the `power` part of `appliance status`.
"""),
    ("uplink", "`uplink` (MQTT store-and-forward; docs/mqtt.md)", "", """\
The backlog limits apply to the whole `events` table. Over a limit, sent events are
deleted first, oldest first. Unsent events are deleted only when the unsent ones alone
are over a limit, oldest first; each such drop is counted
(`appliance_uplink_events_dropped_total{reason}`) and announced on the events topic.
The limits hold with the uplink on; with `uplink.enabled: false` nothing is deleted.
"""),
]

OUTRO = """\
## Paths (command line and environment, not in the file)

| what | how | default |
|---|---|---|
| data directory (database, status) | `--data-dir DIR` or `APPLIANCE_DATA_DIR` | `./data` |
| asset cache (models, media) | `APPLIANCE_ASSETS_DIR` | `<checkout>/data/assets`; installed /var/lib/appliance/assets |
| dashboard port (overrides `web.port`) | `--web-port N` or `APPLIANCE_WEB_PORT` | `web.port` |
"""


def _hints(field: FieldInfo) -> DocHints:
    extra = field.json_schema_extra
    return extra if isinstance(extra, DocHints) else DocHints()


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def _default(field: FieldInfo) -> str:
    hints = _hints(field)
    if hints.default is not None:
        return hints.default
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "none"
    return f"`{_yaml_value(value)}`"


def _model_of(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model a key holds, whether as a list of them)."""
    tp, _ = unwrap(tp)
    if is_union(tp) and len(members(tp)) == 1:
        tp, _ = unwrap(members(tp)[0])
    if typing.get_origin(tp) is list:
        item, _ = unwrap(typing.get_args(tp)[0])
        if is_model(item):
            return item, True
    if is_model(tp):
        return tp, False
    return None, False


def rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key of a model, nested ones included."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub, is_list = _model_of(field.annotation)
        if sub is not None and not is_list:
            if field.default is None:  # an optional mapping (cameras[].calibration): a row of its own
                out.append((key, _hints(field).type or "mapping", "none", field.description or ""))
            out += rows(sub, key + ".")
            continue
        if sub is not None:  # a list of entries: one row for the list, then the entry's keys
            out.append((key, _hints(field).type or "list", _default(field), field.description or ""))
            out += rows(sub, key + "[].")
            continue
        type_text = _hints(field).type or describe(field.annotation, field.metadata)
        out.append((key, type_text, _default(field), field.description or ""))
    return out


def _table(section: str) -> str:
    field = Config.model_fields[section]
    sub, is_list = _model_of(field.annotation)
    assert sub is not None, section
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_text, default, meaning in rows(sub, f"{section}[]." if is_list else f"{section}."):
        lines.append(f"| `{key}` | {type_text} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    assert [s for s, *_ in SECTIONS] and {s for s, *_ in SECTIONS} == set(Config.model_fields), \
        "every section of Config needs an entry in SECTIONS"
    parts = [INTRO]
    for section, heading, before, after in SECTIONS:
        block = f"## {heading}\n\n"
        if before:
            block += before + "\n"
        block += _table(section)
        if after:
            block += "\n" + after
        parts.append(block)
    parts.append(OUTRO)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.config.docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when the file is not what would be written")
    p.add_argument("--output", type=Path, default=DOC_PATH, help="default: %(default)s")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m appliance.config.docs", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
