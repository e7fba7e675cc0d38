"""web/configfile.py: the config file edited in place (round-trip, validated, atomic), as
`appliance passwd` and the dashboard's line and zone editor use it."""
from __future__ import annotations

import threading

import pytest

from appliance.config import Config, replace
from appliance.errors import ApplianceError
from web import configfile

SITE = """\
# Gate 3, installed 2026-05-01
device: {id: gate-3}   # printed on the box
cameras:
- id: north      # over the door
  source: "rtsp://10.0.0.5/stream1"
web:
  port: 8081  # the customer's firewall allows this one
"""


def test_an_edit_keeps_comments_order_quoting_and_the_file_mode(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SITE)
    path.chmod(0o600)

    def change(data):
        data["cameras"][0]["lines"] = configfile.to_yaml([{"name": "door", "points": [[0.1, 0.5], [0.9, 0.5]]}])
        data["web"]["port"] = 8082

    cfg = configfile.edit(path, change)
    assert isinstance(cfg, Config) and cfg.web.port == 8082 and cfg.cameras[0].lines[0].name == "door"
    assert path.read_text() == SITE.replace("8081", "8082").replace(
        '  source: "rtsp://10.0.0.5/stream1"\n',
        '  source: "rtsp://10.0.0.5/stream1"\n  lines:\n  - name: door\n    points: [[0.1, 0.5], [0.9, 0.5]]\n')
    assert path.stat().st_mode & 0o777 == 0o600
    # No temporary file left; the previous file kept as the backup.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "config.yaml.bak"]


def test_an_invalid_result_is_refused_with_every_problem_and_the_file_untouched(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SITE)
    before = path.read_bytes()

    def change(data):
        data["web"]["port"] = "http"
        data["cameras"][0]["lines"] = configfile.to_yaml([{"name": "door", "points": [[0.1, 0.5]]}])

    with pytest.raises(ApplianceError) as e:
        configfile.edit(path, change)
    assert str(e.value).splitlines() == [
        f"{path}: cameras[0].lines[0].points: a line needs at least 2 points, got 1",
        f"{path}: web.port: expected an integer, got str 'http'",
    ]
    assert path.read_bytes() == before


@pytest.mark.parametrize("content, message", [
    ("- a list\n", "expected a mapping at the top, got CommentedSeq"),
    ("web: {port: 1\n", "invalid YAML"),
    ("\xff\xfe", "not UTF-8 text"),
])
def test_a_file_that_is_not_a_config_mapping_is_left_alone(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content.encode("latin-1"))
    before = path.read_bytes()
    with pytest.raises(ApplianceError, match=message):
        configfile.edit(path, lambda data: data.update(web={"port": 8082}))
    assert path.read_bytes() == before


def test_a_missing_file_is_made_only_when_asked(tmp_path):
    path = tmp_path / "etc" / "config.yaml"
    with pytest.raises(ApplianceError, match="cannot read"):
        configfile.edit(path, lambda data: None)
    assert not path.exists()
    configfile.edit(path, lambda data: data.update(device=configfile.to_yaml({"id": "gate-3"})), create=True)
    assert path.read_text() == "device:\n  id: gate-3\n"
    assert path.stat().st_mode & 0o777 == replace.NEW_FILE_MODE


def test_an_error_raised_by_the_change_leaves_the_file_alone(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SITE)

    def change(data):
        data["web"]["port"] = 1
        raise ApplianceError("no")

    with pytest.raises(ApplianceError, match="no"):
        configfile.edit(path, change)
    assert path.read_text() == SITE


def test_edits_from_several_threads_all_land(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("cameras:\n- id: a\n  source: 'asset:vtest.avi'\n  lines: []\n")

    def add(i):
        def change(data):
            data["cameras"][0]["lines"].append(configfile.to_yaml({"name": f"l{i}", "points": [[0, i], [1, i]]}))
        configfile.edit(path, change)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = configfile.edit(path, lambda data: None).cameras[0].lines
    assert sorted(ln.name for ln in lines) == [f"l{i}" for i in range(8)]


def test_to_yaml_and_same():
    node = configfile.to_yaml({"name": "z", "points": [[1, 2], [3, 4]], "classes": ["person"]})
    assert node["points"].fa.flow_style() and node["classes"].fa.flow_style() and not node.fa.flow_style()
    assert configfile.same(node, {"name": "z", "points": [[1.0, 2.0], [3, 4]], "classes": ["person"]})
    assert not configfile.same(node, {"name": "z", "points": [[1, 2], [3, 5]], "classes": ["person"]})
    assert not configfile.same(node["name"], 1) and not configfile.same(True, 1) and configfile.same(None, None)
