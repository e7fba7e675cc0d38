from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ApplianceError


def _load(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return config.load(p)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ApplianceError) as e:
        _load(tmp_path, text)
    return str(e.value)


def test_empty_file_is_the_builtin_demo(tmp_path):
    cfg = _load(tmp_path, "")
    assert cfg == config.Config()
    assert cfg.cameras[0].source == "asset:vtest.avi"
    assert cfg.detect.model == "ssd-mobilenet-v2"


def test_values_are_read_and_typed(tmp_path):
    cfg = _load(tmp_path, """
device: {id: gate-3}
cameras:
  - {id: north, source: rtsp://10.0.0.5/stream1}
  - {id: south, source: /videos/a.mp4, realtime: false, loop: true}
detect: {threshold: 1, classes: [person]}
track: {max_age_s: 10}
""")
    assert cfg.device.id == "gate-3"
    assert [c.id for c in cfg.cameras] == ["north", "south"]
    assert cfg.cameras[1].loop is True and cfg.cameras[1].realtime is False
    assert cfg.detect.threshold == 1.0 and isinstance(cfg.detect.threshold, float)
    assert cfg.detect.classes == ["person"]
    assert cfg.track.max_age_s == 10.0 and cfg.track.min_hits == 3


@pytest.mark.parametrize("text, expected", [
    ("cameras:\n  - {id: a, sorce: x.mp4}\n", "cameras[0].sorce: unknown key"),
    ("detect: {threshold: high}\n", "detect.threshold: expected a number, got str 'high'"),
    ("detect: {threshold: 1.5}\n", "detect.threshold: must be between 0.0 and 1.0, got 1.5"),
    ("detect: {backend: tensorflow}\n", "detect.backend: must be one of auto, litert, onnxruntime"),
    ("track: {min_hits: 2.5}\n", "track.min_hits: expected an integer, got float 2.5"),
    ("track: {max_age: 30}\n", "track.max_age: replaced by track.max_age_s, in seconds, not frames"),
    ("track: {min_hits: true}\n", "track.min_hits: expected an integer, got bool True"),
    ("cameras:\n  - {id: a, source: x, loop: 'yes'}\n", "cameras[0].loop: expected true or false"),
    ("cameras:\n  - {source: x}\n", "cameras[0].id: required key is missing"),
    ("cameras: []\n", "cameras: at least one camera is needed"),
    ("cameras:\n  - {id: a, source: x}\n  - {id: a, source: y}\n", "cameras[1].id: duplicate camera id 'a'"),
    ("detect: [1, 2]\n", "detect: expected a mapping, got list"),
    ("nonsense: 1\n", "nonsense: unknown key (valid keys: device, cameras"),
    ("detect: {classes: person}\n", "detect.classes: expected a list, got str 'person'"),
])
def test_bad_values_name_the_file_and_key(tmp_path, text, expected):
    msg = _error(tmp_path, text)
    assert msg.startswith(str(tmp_path / "c.yaml") + ": ")
    assert expected in msg


def test_invalid_yaml_names_the_line(tmp_path):
    msg = _error(tmp_path, "device:\n  id: [unclosed\n")
    assert "invalid YAML" in msg and "line" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ApplianceError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True)


def test_config_check_prints_effective_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("track: {max_age_s: 9}\n")
    r = _cli("config", "check", str(p))
    assert r.returncode == 0, r.stderr
    assert "max_age_s: 9" in r.stdout and "min_hits: 3" in r.stdout and "source: asset:vtest.avi" in r.stdout


def test_config_check_bad_value_is_one_line_without_traceback(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("detect:\n  threshold: '0.5'\n")
    r = _cli("config", "check", str(p))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "detect.threshold: expected a number, got str '0.5'" in r.stderr


def _keys(model, prefix=""):
    """Every key of a config model as docs/config.md names it: detect.threshold, cameras[].id, ..."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        listed = typing.get_origin(ann) is list
        inner = typing.get_args(ann)[0] if listed else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if listed and prefix:
                yield prefix + name  # power.schedule has a row of its own
            yield from _keys(inner, f"{prefix}{name}{'[]' if listed else ''}.")
        else:
            yield prefix + name


def test_docs_config_md_is_generated_from_the_models():
    """docs/config.md is written by `python -m appliance.config.docs` from the models (keys,
    types, ranges, defaults, meanings): a model changed without regenerating it fails here."""
    from appliance.config import docs

    text = docs.DOC_PATH.read_text(encoding="utf-8")
    assert text == docs.render(), "docs/config.md is stale: run .venv/bin/python -m appliance.config.docs"
    missing = [k for k in _keys(config.Config) if f"| `{k}` |" not in text]
    assert missing == []
    assert "| `detect.threads` | `auto` \\| integer 1–64 | `auto` |" in text
