"""The self-test's report: one Check per thing tested, and the Report that holds them.

The same report is printed in the terminal (summary()), kept as JSON in
`<data dir>/selftest.json`, shown on the dashboard's self-test page and published
retained on `<prefix>/<device>/selftest` (docs/schemas/mqtt-selftest.v1.json).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
FILE = "selftest.json"
STATUSES = ("pass", "warn", "fail")
MARKS = {"pass": "✓", "warn": "!", "fail": "✗"}


@dataclass
class Check:
    name: str  # "config", "camera:north", "uplink", ...: stable, for scripts and --only
    status: str  # pass | warn | fail
    value: str  # what was measured, in words ("640x480 at 10.0 fps", "12 ms per frame")
    hint: str = ""  # what to do about a warning or a failure (empty when it passed)
    detail: dict[str, Any] = field(default_factory=dict)  # the figures, JSON-ready

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status must be one of {STATUSES}, got {self.status!r}")

    @property
    def group(self) -> str:
        """The kind of check ("camera" for "camera:north"): what --only names."""
        return self.name.split(":", 1)[0]


def passed(name: str, value: str, hint: str = "", **detail: Any) -> Check:
    return Check(name, "pass", value, hint, detail)


def warned(name: str, value: str, hint: str, **detail: Any) -> Check:
    return Check(name, "warn", value, hint, detail)


def failed(name: str, value: str, hint: str, **detail: Any) -> Check:
    return Check(name, "fail", value, hint, detail)


@dataclass
class Report:
    device: str
    version: str
    config: str  # the config file checked, or "built-in"
    ts: float = field(default_factory=time.time)  # when the test started (unix seconds)
    duration_s: float = 0.0
    checks: list[Check] = field(default_factory=list)
    published: str = ""  # the topic the report went to, once it did (not in the MQTT payload)

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings allowed): the exit status is 0 exactly then."""
        return not any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self, *, published: bool = True) -> dict[str, Any]:
        out = {"schema": SCHEMA, "device": self.device, "software": {"version": self.version},
               "config": self.config, "ts": round(self.ts, 3), "duration_s": round(self.duration_s, 2),
               "ok": self.ok, "counts": self.counts(), "checks": [asdict(c) for c in self.checks]}
        if published and self.published:
            out["published"] = self.published
        return out

    def to_json(self, *, indent: int | None = None, published: bool = True) -> str:
        return json.dumps(self.to_dict(published=published), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls(device=d["device"], version=d["software"]["version"], config=d["config"], ts=d["ts"],
                   duration_s=d.get("duration_s", 0.0), published=d.get("published", ""),
                   checks=[Check(c["name"], c["status"], c["value"], c.get("hint", ""), c.get("detail") or {})
                           for c in d["checks"]])

    def summary(self) -> str:
        """The terminal's form: a line per check (✓ pass, ! warning, ✗ failure), the hint
        under each that did not pass, and a last line with the verdict."""
        width = max((len(c.name) for c in self.checks), default=0)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ts))
        lines = [f"self-test of {self.device} (appliance {self.version}, config {self.config}) at {when}"]
        for c in self.checks:
            lines.append(f"{MARKS[c.status]} {c.name:<{width}}  {c.value}")
            if c.hint and c.status != "pass":
                lines.append(f"  {'':<{width}}  → {c.hint}")
        n = self.counts()
        verdict = "PASSED" if self.ok else "FAILED"
        lines.append(f"{verdict}: {n['pass']} passed, {n['warn']} warnings, {n['fail']} failed "
                     f"({self.duration_s:.1f} s)")
        if self.published:
            lines.append(f"published on {self.published}")
        return "\n".join(lines)


def save(report: Report, data_dir: Path) -> Path:
    """Write `<data dir>/selftest.json` atomically (a reader never sees half a file).
    OSError when the directory cannot be written (the data_dir check says why)."""
    path = Path(data_dir) / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(report.to_json(indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(data_dir: Path) -> Report | None:
    """The last kept report, or None when there is none or it cannot be read."""
    try:
        return Report.from_dict(json.loads((Path(data_dir) / FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
