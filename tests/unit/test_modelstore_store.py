"""The model store on real files: install, sha256 records, activate, rollback, and the
bad input that must be refused with the active version left as it was."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.assets import sha256_of
from appliance.modelstore.store import ModelRef, ModelStore, ModelStoreError, parse_ref

SSD = "ssd-mobilenet-v2"
NAME = "ssd-mobilenet-v2-coco"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data")


def test_install_copies_the_manifest_and_files_with_their_sha256(store, assets_dir):
    ref = store.install(SSD, assets_dir, version="2")
    assert ref == ModelRef(NAME, "2")
    folder = store.path(ref)
    rec = json.loads((folder / "store.json").read_text())
    weights = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    assert rec["files"][weights] == sha256_of(assets_dir / weights)
    assert set(rec["files"]) >= {weights, "coco_labels.txt", "model.yaml"}
    assert "version: '2'" in (folder / "model.yaml").read_text()
    assert store.verify(ref) == folder / "model.yaml"
    assert store.versions() == [ref] and store.active() is None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_activate_and_rollback_walk_the_history(store, assets_dir):
    v1 = store.install(SSD, assets_dir, check=False)
    v2 = store.install(SSD, assets_dir, version="2", check=False)
    assert store.set_active(v1) is None  # it replaced the configured model
    assert store.set_active(v2) == v1
    assert store.active() == v2 and store.history() == [None, v1]
    listing = {f"{r['name']}@{r['version']}": r["active"] for r in store.listing()}
    assert listing == {str(v1): False, str(v2): True}
    assert store.rollback() == v1 and store.active() == v1
    assert store.rollback() is None and store.active() is None  # back to detect.model
    with pytest.raises(ModelStoreError, match="no previous model version"):
        store.rollback()


def test_active_json_is_replaced_whole(store, assets_dir):
    v1 = store.install(SSD, assets_dir, check=False)
    store.set_active(v1)
    files = sorted(p.name for p in store.root.iterdir())
    assert files == ["active.json", NAME]  # no temporary file left beside it
    assert json.loads((store.root / "active.json").read_text())["active"] == {"name": NAME, "version": v1.version}


def test_a_file_changed_after_install_is_refused(store, assets_dir):
    ref = store.install(SSD, assets_dir, version="2", check=False)
    weights = store.path(ref) / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match=r"mobilenet_ssd_v2_coco_quant_postprocess.tflite has sha256 "
                                              r"[0-9a-f]{64}, recorded at install [0-9a-f]{64}: refused"):
        store.verify(ref)


def test_install_with_a_wrong_sha256_is_refused_and_stores_nothing(store, assets_dir):
    with pytest.raises(ModelStoreError, match=r"sha256 is 7046f31a[0-9a-f]+, expected 00ff: refused"):
        store.install(SSD, assets_dir, version="3", sha256="00ff")
    assert store.versions() == []


def test_a_classifier_given_as_a_detector_is_refused_at_install(store, assets_dir, tmp_path):
    shutil.copy(assets_dir / "efficientnet_lite0.tflite", tmp_path / "efficientnet_lite0.tflite")
    (tmp_path / "model.yaml").write_text(
        "name: vehicle-detector\nversion: '1'\nfile: efficientnet_lite0.tflite\nformat: tflite\n"
        "input: {width: 224, height: 224}\ndecoder: ssd\nlabels: [car, truck]\n")
    with pytest.raises(ModelStoreError) as e:
        store.install(tmp_path / "model.yaml", assets_dir)
    msg = str(e.value)
    assert "model vehicle-detector@1 not installed" in msg and "ssd decoder" in msg and "(1, 1000)" in msg
    assert store.versions() == [] and not (store.root / "vehicle-detector").exists()


def test_unknown_versions_bad_names_and_duplicates(store, assets_dir):
    with pytest.raises(ModelStoreError, match="model x@1 is not installed .installed: none installed."):
        store.set_active(ModelRef("x", "1"))
    with pytest.raises(ModelStoreError, match="expected NAME@VERSION, got 'x'"):
        parse_ref("x")
    with pytest.raises(ModelStoreError, match="version '../up' cannot be stored"):
        store.install(SSD, assets_dir, version="../up", check=False)
    store.install(SSD, assets_dir, version="2", check=False)
    with pytest.raises(ModelStoreError, match="already installed"):
        store.install(SSD, assets_dir, version="2", check=False)
    assert store.active() is None
