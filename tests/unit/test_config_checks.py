"""The config's rules: all errors at once, rules between keys, files the config names,
files that are not YAML text, the round trip of `config check` and masked secrets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from appliance import config
from appliance.errors import ApplianceError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "config.example.yaml"


def _write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _error(tmp_path: Path, text: str | bytes, **kwargs) -> list[str]:
    p = _write(tmp_path, text)
    with pytest.raises(ApplianceError) as e:
        config.load(p, **kwargs)
    lines = str(e.value).splitlines()
    assert all(line.startswith(f"{p}: ") for line in lines), lines
    return [line[len(f"{p}: "):] for line in lines]


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          input=stdin, cwd=REPO)


# -- every error at once --------------------------------------------------------------


def test_every_error_in_the_file_comes_at_once_one_line_each(tmp_path):
    lines = _error(tmp_path, """
cameras:
  - {id: a, source: x.mp4, loop: 'yes please'}
detect: {threshold: high, threads: 0}
track: {min_hits: 2.5}
uplink: {port: 0}
bogus: 1
""")
    assert lines == [
        "cameras[0].loop: expected true or false, got str 'yes please'",
        "detect.threshold: expected a number, got str 'high'",
        "detect.threads: expected auto or integer 1–64, got int 0",
        "track.min_hits: expected an integer, got float 2.5",
        "uplink.port: must be between 1 and 65535, got 0",
        "bogus: unknown key (valid keys: device, cameras, detect, track, classify, events, snapshots, store, "
        "log, adaptive, power, web, uplink)",
    ]


@pytest.mark.parametrize("text, key", [
    ("detect: {threshold: .nan}", "detect.threshold"),
    ("detect: {threshold: .inf}", "detect.threshold"),
    ("track: {iou_threshold: -.inf}", "track.iou_threshold"),
    ("events: {update_interval_s: .inf}", "events.update_interval_s"),
    ("cameras: [{id: a, source: x, fps: .nan}]", "cameras[0].fps"),
    ("power: {step_down_c: .nan}", "power.step_down_c"),
    ("uplink: {backlog: {max_age_days: .inf}}", "uplink.backlog.max_age_days"),
])
def test_nan_and_infinity_are_refused_naming_the_key(tmp_path, text, key):
    (line,) = _error(tmp_path, text + "\n")
    assert line.startswith(f"{key}: must be a finite number, got ")


@pytest.mark.parametrize("text, expected", [
    ("power: {policy: schedule}", "power.schedule: the schedule policy needs at least one entry"),
    ("power: {schedule: [{at: '25:99', mode: a}]}", "power.schedule[0].at: expected HH:MM (00:00-23:59), got '25:99'"),
    ("power: {schedule: [{at: 22:00, mode: a}]}", "power.schedule[0].at: expected HH:MM in quotes, got int 1320"),
    ("power: {modes: [a, b], mode: c}", "power.mode: 'c' is not one of power.modes (a, b)"),
    ("uplink: {topic_prefix: a/+/b}", "uplink.topic_prefix: 'a/+/b' cannot be used in an MQTT topic"),
    ("uplink: {topic_prefix: a//b}", "uplink.topic_prefix: 'a//b' cannot be used in an MQTT topic"),
    ("device: {id: 'a/#'}", "device.id: 'a/#' cannot be used in an MQTT topic"),
    ("device: {id: a/b}", "device.id: 'a/b' must not contain '/'"),
    ("uplink: {password: pw}", "uplink.password: set uplink.username too"),
    ("uplink: {tls: {ca_file: ca.pem, cert_file: c.pem}}", "uplink.tls.cert_file: set uplink.tls.key_file too"),
    ("uplink: {tls: {ca_file: ca.pem, key_file: k.pem}}", "uplink.tls.key_file: set uplink.tls.cert_file too"),
    ("uplink: {tls: {cert_file: c.pem, key_file: k.pem}}", "uplink.tls.cert_file: needs uplink.tls.ca_file"),
    ("uplink: {reconnect_min_s: 10, reconnect_max_s: 1}", "uplink.reconnect_max_s: must not be less than"),
    ("web: {password_hash: hunter2}", "web.password_hash: not a hash written by 'appliance passwd'"),
    ("cameras: [{id: a, source: 'csi://front'}]", "cameras[0].source: expected csi://N"),
    ("cameras: [{id: a, source: 'ftp://x/y'}]", "cameras[0].source: unsupported scheme 'ftp'"),
    ("cameras: [{id: a, source: '  '}]", "cameras[0].source: expected a non-empty string"),
    ("detect: {threads: many}", "detect.threads: expected auto or integer 1–64, got str 'many'"),
    ("detect: {threads: 65}", "detect.threads: expected auto or integer 1–64, got int 65"),
])
def test_rules_between_keys_are_config_errors(tmp_path, text, expected):
    lines = _error(tmp_path, text + "\n")
    assert any(line.startswith(expected) for line in lines), lines
    assert "hunter2" not in "\n".join(lines)


def test_a_password_never_appears_in_an_error(tmp_path):
    lines = _error(tmp_path, "uplink: {password: 12345678}\ncameras: [{id: a, source: 'ftp://u:s3cret@h/x'}]\n")
    text = "\n".join(lines)
    assert "uplink.password: expected a string, got int" in text and "12345678" not in text
    assert "s3cret" not in text
    with pytest.raises(ValidationError) as e:  # built in code: the exception hides inputs too
        config.UplinkConfig(password=12345678)
    assert "12345678" not in str(e.value)


def test_threads_is_auto_or_a_count():
    assert config.Config().detect.threads == "auto"
    assert config.from_dict({"detect": {"threads": 3}}).detect.threads == 3
    assert config.from_dict({"detect": {"threads": "auto"}}).detect.threads == "auto"


def test_assignment_is_validated_like_the_file():
    cfg = config.Config()
    cfg.cameras[0].loop = True  # what `appliance run --loop` does
    assert cfg.cameras[0].loop is True
    with pytest.raises(ValidationError):
        cfg.cameras[0].loop = "yes"
    with pytest.raises(ValidationError):
        cfg.detect.threshold = float("nan")


def test_an_int_is_a_number_but_a_string_is_not():
    cfg = config.from_dict({"detect": {"threshold": 1}, "power": {"step_down_c": 90}})
    assert cfg.detect.threshold == 1.0 and isinstance(cfg.detect.threshold, float)
    with pytest.raises(ApplianceError, match="detect.threshold: expected a number, got str '0.5'"):
        config.from_dict({"detect": {"threshold": "0.5"}})


# -- files the config names -----------------------------------------------------------


def test_without_the_asset_cache_files_are_not_checked():
    cfg = config.from_dict({"cameras": [{"id": "a", "source": "/nonexistent/a.mp4"}],
                            "detect": {"model": "nonexistent-model"},
                            "uplink": {"tls": {"ca_file": "/nonexistent/ca.pem"}}})
    assert cfg.detect.model == "nonexistent-model"


@pytest.mark.parametrize("text, expected", [
    ("detect: {model: nonexistent-model}",
     "detect.model: unknown model 'nonexistent-model': no "),
    ("detect: {classes: [person, unicorn]}", "detect.classes: 'unicorn' not a label of model ssd-mobilenet-v2-coco"),
    ("detect: {backend: onnxruntime}", "detect.backend: onnxruntime cannot run model ssd-mobilenet-v2 (format tflite"),
    ("detect: {model: yolov8-fall-test, backend: litert, classes: []}",
     "detect.backend: litert cannot run model yolov8-fall-test (format onnx"),
    ("cameras: [{id: a, source: /nonexistent/a.mp4}]", "cameras[0].source: video file /nonexistent/a.mp4 not found"),
    ("cameras: [{id: a, source: 'asset:nope.avi'}]",
     "cameras[0].source: video file nope.avi is not in the asset cache"),
    ("uplink: {enabled: true, tls: {ca_file: /nonexistent/ca.pem}}",
     "uplink.tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory"),
    ("uplink: {enabled: true, tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem, "
     "key_file: /nonexistent/k.pem}}", "uplink.tls.key_file: cannot read /nonexistent/k.pem"),
])
def test_files_are_checked_with_the_asset_cache(tmp_path, assets_dir, text, expected):
    lines = _error(tmp_path, text + "\n", assets_dir=assets_dir)
    assert any(line.startswith(expected) for line in lines), lines


def test_no_files_turns_missing_files_into_warnings(tmp_path, assets_dir):
    p = _write(tmp_path, "cameras: [{id: a, source: /nonexistent/a.mp4}]\n"
                         "uplink: {enabled: true, tls: {ca_file: /nonexistent/ca.pem}}\n")
    warnings: list[str] = []
    cfg = config.load(p, assets_dir, files="warn", warnings=warnings)
    assert cfg.cameras[0].source == "/nonexistent/a.mp4"
    assert warnings == [
        f"{p}: cameras[0].source: video file /nonexistent/a.mp4 not found (--no-files: it must exist on the device)",
        f"{p}: uplink.tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory "
        "(--no-files: it must exist on the device)",
    ]
    # Rules that do not depend on where the config runs stay errors.
    with pytest.raises(ApplianceError, match="detect.model: unknown model"):
        config.from_dict({"detect": {"model": "nope"}}, assets_dir=assets_dir, files="warn")


def test_tls_files_are_checked_with_the_uplink_off_too(tmp_path, assets_dir):
    with pytest.raises(ApplianceError, match="c.yaml: uplink.tls.ca_file: cannot read /nonexistent/ca.pem"):
        config.from_dict({"uplink": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}, "c.yaml", assets_dir=assets_dir)


LIVE = [{"id": "cam", "source": "rtsp://10.0.0.5/s"}]  # no file to check


def _manifest(tmp_path: Path, **changes) -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "tiny.tflite").write_bytes(b"placeholder")
    raw = {"name": "tiny", "file": "tiny.tflite", "format": "tflite", "decoder": "ssd",
           "input": {"width": 300, "height": 300}, "labels": ["person", "car"], **changes}
    (d / "model.yaml").write_text(yaml.safe_dump(raw))
    return d / "model.yaml"


def test_classes_are_checked_against_a_manifests_labels(tmp_path):
    m = _manifest(tmp_path)
    cfg = config.from_dict({"cameras": LIVE, "detect": {"model": str(m), "classes": ["Person"]}},
                           assets_dir=tmp_path)
    assert cfg.detect.classes == ["Person"]  # labels match whatever the case
    with pytest.raises(ApplianceError, match=r"detect.classes: 'bus' not a label of model tiny; valid: person, car"):
        config.from_dict({"cameras": LIVE, "detect": {"model": str(m), "classes": ["car", "bus"]}},
                         assets_dir=tmp_path)


def test_classes_without_a_labels_file_here_are_a_warning(tmp_path):
    m = _manifest(tmp_path, labels="labels.txt")  # not fetched
    warnings: list[str] = []
    config.from_dict({"cameras": LIVE, "detect": {"model": str(m), "classes": ["unicorn"]},
                      "classify": {"enabled": False}}, "c.yaml", assets_dir=tmp_path, warnings=warnings)
    assert len(warnings) == 1 and warnings[0].startswith(
        "c.yaml: detect.classes: not checked against the model's labels: ")
    assert "labels: file labels.txt not found" in warnings[0]


def test_a_bad_manifest_is_a_detect_model_error(tmp_path):
    m = _manifest(tmp_path, decoder="rcnn", thresh=1)
    with pytest.raises(ApplianceError) as e:
        config.from_dict({"cameras": LIVE, "detect": {"model": str(m)}}, "c.yaml", assets_dir=tmp_path)
    assert str(e.value).startswith("c.yaml: detect.model: ")
    assert "decoder: must be one of ssd, yolo" in str(e.value) and "unknown key thresh" in str(e.value)


# -- files that are not YAML text -------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    ("detect: {threshold: 0.4}\n".encode("utf-16"), "not UTF-8 text: it looks like UTF-16"),
    ("detect: {threshold: 0.4}\n".encode("utf-16-le"), "not UTF-8 text: it looks like UTF-16"),
    (bytes(range(256)) * 4, "not a text file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(1, 256)), "not UTF-8 text: byte 0x89 at offset 0"),
    ("device: {id: café}\n".encode("latin-1"), "not UTF-8 text: byte 0xe9"),
])
def test_binary_and_utf16_files_are_clear_errors(tmp_path, data, expected):
    (line,) = _error(tmp_path, data)
    assert line.startswith(expected)


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "".join("  " * i + f"k{i}:\n" for i in range(5000)),
    "a: " + "{b: " * 5000 + "c" + "}" * 5000 + "\n",
])
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path, text):
    (line,) = _error(tmp_path, text)
    assert "invalid YAML: nested more than 100 levels deep" in line and line.startswith("line ")


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    lines = _error(tmp_path, "detect: {threshold: 0.4}\ntrack: {min_hits: 3}\ndetect:\n  threshold: 0.3\n"
                             "  threshold: 0.2\ncameras:\n  - {id: a, source: x, loop: true, loop: false}\n")
    assert lines == [
        "detect: duplicate key (line 1 and again line 3)",
        "detect.threshold: duplicate key (line 4 and again line 5)",
        "cameras[0].loop: duplicate key (line 7, columns 24 and 36)",
    ]


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    p = _write(tmp_path, "cameras:\n  - &cam {id: a, source: x.mp4, loop: true}\n  - {<<: *cam, id: b}\n")
    assert [c.id for c in config.load(p).cameras] == ["a", "b"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "\ufeff"])
def test_an_empty_file_is_the_defaults(tmp_path, text):
    assert config.load(_write(tmp_path, text)) == config.Config()


def test_a_top_level_that_is_not_a_mapping(tmp_path):
    assert _error(tmp_path, "- a\n") == ["expected a mapping at the top, got list"]
    assert _error(tmp_path, "42\n") == ["expected a mapping at the top, got int"]


# -- round trip and secrets -----------------------------------------------------------


def _round_trip(cfg: config.Config) -> config.Config:
    return config.from_dict(yaml.safe_load(config.dump(cfg, secrets=True)))


def test_the_defaults_round_trip():
    cfg = config.Config()
    assert _round_trip(cfg) == cfg
    data = config.to_dict(cfg)
    unset = [data["cameras"][0]["fourcc"], data["power"]["mode"], data["web"]["password_hash"],
             data["uplink"]["username"], data["uplink"]["password"], *data["uplink"]["tls"].values()]
    assert unset == [None] * 8  # null, not '', in the printed config


def test_the_full_example_round_trips_and_sets_every_section():
    cfg = config.load(EXAMPLE)
    assert set(yaml.safe_load(EXAMPLE.read_text())) == set(config.Config.model_fields)
    assert cfg != config.Config()
    again = _round_trip(cfg)
    assert again == cfg
    assert again.uplink.password.get_secret_value() == "change-me"
    assert again.web.password_hash.get_secret_value().startswith("scrypt:")


def test_empty_strings_read_as_unset():
    cfg = config.from_dict({"uplink": {"username": "", "password": "", "tls": {"ca_file": ""}},
                            "web": {"password_hash": ""}, "power": {"mode": ""},
                            "cameras": [{"id": "a", "source": "x", "fourcc": ""}]})
    assert (cfg.uplink.username, cfg.uplink.password, cfg.uplink.tls.ca_file, cfg.web.password_hash,
            cfg.power.mode, cfg.cameras[0].fourcc) == (None,) * 6


def test_to_dict_masks_secrets_unless_asked():
    cfg = config.load(EXAMPLE)
    masked = config.to_dict(cfg)
    assert masked["uplink"]["password"] == config.MASK and masked["web"]["password_hash"] == config.MASK
    assert masked["cameras"][0]["source"] == "rtsp://viewer:***@10.0.0.5:554/stream1"
    assert "change-me" not in json.dumps(masked)
    shown = config.to_dict(cfg, secrets=True)
    assert shown["uplink"]["password"] == "change-me"
    assert shown["cameras"][0]["source"] == "rtsp://viewer:change-me@10.0.0.5:554/stream1"
    assert "change-me" not in repr(cfg.uplink) and "change-me" not in str(cfg.uplink.password)


def test_config_check_masks_secrets_and_its_output_loads_back(tmp_path):
    r = _cli("config", "check", "--no-files", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "change-me" not in r.stdout and "scrypt:" not in r.stdout and "password: '***'" in r.stdout
    assert "--no-files: it must exist on the device" in r.stderr  # the TLS files are the device's
    r = _cli("config", "check", "--no-files", "--show-secrets", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    out = _write(tmp_path, r.stdout, "out.yaml")
    assert config.load(out) == config.load(EXAMPLE)


def test_config_check_of_the_defaults_loads_back(tmp_path, assets_dir):
    r = _cli("config", "check", str(_write(tmp_path, "")))
    assert r.returncode == 0, r.stderr
    assert config.load(_write(tmp_path, r.stdout, "out.yaml")) == config.Config()


def test_config_check_reports_files_as_errors_unless_no_files(tmp_path, assets_dir):
    p = _write(tmp_path, "cameras: [{id: a, source: /nonexistent/a.mp4}]\n")
    r = _cli("config", "check", str(p))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"appliance: error: {p}: cameras[0].source: video file /nonexistent/a.mp4 not found\n"
    r = _cli("config", "check", "--no-files", str(p))
    assert r.returncode == 0 and "appliance: warning: " in r.stderr


def test_config_schema_is_the_json_schema_of_the_file():
    r = _cli("config", "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    assert schema["additionalProperties"] is False and "detect" in schema["properties"]
    detect = schema["$defs"]["DetectConfig"]["properties"]
    assert detect["threads"]["default"] == "auto"
    assert {"const": "auto", "type": "string"} in detect["threads"]["anyOf"]
    assert detect["threshold"]["minimum"] == 0.0 and detect["threshold"]["maximum"] == 1.0
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)
