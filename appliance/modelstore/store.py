"""The model store: several versions of the detector on the device, and which one is active.

    <data_dir>/models/<name>/<version>/model.yaml    the manifest (its `version` is the store's)
                                      /<files>       the weights and labels it names
                                      /store.json    sha256 of every file, when and from where
    <data_dir>/models/active.json                    {"active": {"name","version"} | null,
                                                      "history": [...]}  (null: detect.model)

Installing copies a manifest and its files into a new version folder (written under a
temporary name, then renamed, so a half-copied version is never seen). Every file's
sha256 is recorded, and checked again before the version is loaded: a file changed or
damaged since install is refused. `active.json` is replaced atomically (write, fsync,
rename); its history is the stack `rollback` pops. docs/models.md describes it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.assets import sha256_of
from appliance.detect.manifest import find_manifest, load_manifest, read_manifest, show_path
from appliance.errors import ApplianceError

ACTIVE_FILE = "active.json"
RECORD_FILE = "store.json"
HISTORY_MAX = 20  # rollback reaches this far back
# A name or version becomes a folder name: no separators, no dot-files, no '@' (NAME@VERSION).
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ModelStoreError(ApplianceError):
    """A store action refused; the message says what and why (the active model stays)."""


@dataclass(frozen=True, order=True)
class ModelRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def parse_ref(text: str) -> ModelRef:
    """NAME@VERSION, as the CLI and MQTT commands take it."""
    name, sep, version = str(text).partition("@")
    if not sep or not name or not version:
        raise ModelStoreError(f"model: expected NAME@VERSION, got {text!r}")
    return ModelRef(name, version)


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_part(kind: str, value: str) -> str:
    if not _SAFE.match(value):
        raise ModelStoreError(f"model {kind} {value!r} cannot be stored: use letters, digits and . _ + - "
                              "(at most 128, not starting with a dot)")
    return value


def _load_check(ref: ModelRef, manifest: Path, assets_dir: Path, source: Path) -> None:
    from appliance.detect import load_detector

    try:
        load_detector(str(manifest), assets_dir, threads=1)
    except ApplianceError as e:  # named after the source, not the temporary copy
        msg = str(e).replace(str(manifest.parent), show_path(source)).replace(
            show_path(manifest.parent), show_path(source))
        raise ModelStoreError(f"model {ref} not installed: {msg}") from None


class ModelStore:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "models"

    # -- versions ---------------------------------------------------------------------

    def path(self, ref: ModelRef) -> Path:
        return self.root / ref.name / ref.version

    def manifest_path(self, ref: ModelRef) -> Path:
        return self.path(ref) / "model.yaml"

    def versions(self) -> list[ModelRef]:
        if not self.root.is_dir():
            return []
        return sorted(ModelRef(v.parent.name, v.name) for v in self.root.glob("*/*")
                      if (v / RECORD_FILE).is_file())

    def record(self, ref: ModelRef) -> dict[str, Any]:
        try:
            return json.loads((self.path(ref) / RECORD_FILE).read_text())
        except FileNotFoundError:
            raise ModelStoreError(self._unknown(ref)) from None
        except (OSError, ValueError) as e:
            raise ModelStoreError(f"model {ref}: its store record is unreadable: {e}") from None

    def _unknown(self, ref: ModelRef) -> str:
        known = ", ".join(str(r) for r in self.versions()) or "none installed"
        return f"model {ref} is not installed (installed: {known}); 'appliance model install' it first"

    def verify(self, ref: ModelRef) -> Path:
        """The version's manifest path, once every file matches the sha256 recorded at install."""
        rec = self.record(ref)
        for name, want in rec["files"].items():
            f = self.path(ref) / name
            if not f.is_file():
                raise ModelStoreError(f"model {ref}: file {name} is missing from {show_path(self.path(ref))}")
            got = sha256_of(f)
            if got != want:
                raise ModelStoreError(f"model {ref}: file {name} has sha256 {got}, "
                                      f"recorded at install {want}: refused (damaged or replaced)")
        return self.manifest_path(ref)

    def install(self, source: str | os.PathLike, assets_dir: Path, version: str | None = None,
                sha256: str | None = None, check: bool = True) -> ModelRef:
        """Copy a manifest (models/<name>, a model.yaml or its folder) and its files in.

        version: the version to store it as (default: the manifest's). sha256: the weights
        file's expected sha256 (e.g. from the fleet's release notes); a mismatch refuses it.
        check: load the copy as a detector before it is stored, so a file that is not the
        detector its manifest describes (a classifier, a broken graph) is refused here.
        """
        from ruamel.yaml import YAML

        src = find_manifest(source)
        man = load_manifest(src, assets_dir)  # files resolved: they exist
        keys = read_manifest(src)
        ref = ModelRef(_check_part("name", man.name), _check_part("version", str(version or man.version)))
        if (self.path(ref) / RECORD_FILE).is_file():
            raise ModelStoreError(f"model {ref} is already installed; install it under another --version")
        if sha256 is not None:
            want = sha256.strip().lower()
            got = sha256_of(man.file)
            if got != want:
                raise ModelStoreError(f"{show_path(man.file)}: sha256 is {got}, expected {want}: refused")
        files = {man.file.name: man.file}
        if man.edgetpu_file is not None and man.edgetpu_file.is_file():
            files[man.edgetpu_file.name] = man.edgetpu_file
        if isinstance(keys.labels, str):
            files[Path(keys.labels).name] = src.parent / keys.labels if (src.parent / keys.labels).is_file() \
                else Path(assets_dir) / keys.labels
        yaml = YAML()
        yaml.width = 4096  # keep long lines as they were
        doc = yaml.load(src.read_text(encoding="utf-8"))
        doc["version"] = ref.version
        doc["file"] = man.file.name  # beside the manifest now
        if "edgetpu_file" in doc and man.edgetpu_file is not None:
            if man.edgetpu_file.name in files:
                doc["edgetpu_file"] = man.edgetpu_file.name
            else:
                del doc["edgetpu_file"]
        if isinstance(keys.labels, str):
            doc["labels"] = Path(keys.labels).name
        (self.root / ref.name).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}.", dir=self.root / ref.name))
        try:
            for name, f in files.items():
                shutil.copyfile(f, tmp / name)
            with open(tmp / "model.yaml", "w", encoding="utf-8") as out:
                yaml.dump(doc, out)
            record = {"name": ref.name, "version": ref.version, "installed_at": time.time(),
                      "source": str(src), "format": man.format,
                      "files": {n: sha256_of(tmp / n) for n in [*files, "model.yaml"]}}
            _write_json_atomic(tmp / RECORD_FILE, record)
            if check:
                _load_check(ref, tmp / "model.yaml", Path(assets_dir), src.parent)
            for f in [tmp, *tmp.iterdir()]:  # mkdtemp and mkstemp make them private
                f.chmod(0o755 if f.is_dir() else 0o644)
            os.replace(tmp, self.path(ref))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not any((self.root / ref.name).iterdir()):
                (self.root / ref.name).rmdir()
            raise
        return ref

    def remove(self, ref: ModelRef) -> None:
        if ref == self.active():
            raise ModelStoreError(f"model {ref} is active; activate another version first")
        self.record(ref)
        shutil.rmtree(self.path(ref))

    # -- active version and history -------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.root / ACTIVE_FILE).read_text())
        except FileNotFoundError:
            return {"active": None, "history": []}
        except (OSError, ValueError) as e:
            raise ModelStoreError(f"{show_path(self.root / ACTIVE_FILE)}: unreadable: {e}") from None
        return {"active": state.get("active"), "history": list(state.get("history", []))}

    @staticmethod
    def _ref(d: dict | None) -> ModelRef | None:
        return None if d is None else ModelRef(d["name"], d["version"])

    def active(self) -> ModelRef | None:
        """The active version; None: the configured detect.model (nothing activated yet)."""
        return self._ref(self._state()["active"])

    def history(self) -> list[ModelRef | None]:
        """Earlier active versions, most recent last (None: the configured detect.model)."""
        return [self._ref(h) for h in self._state()["history"]]

    def set_active(self, ref: ModelRef) -> ModelRef | None:
        """Make `ref` active (it must be installed); the one it replaces goes on the history.
        Returns the replaced one."""
        self.record(ref)
        state = self._state()
        previous = state["active"]
        if previous == ref.as_dict():
            return self._ref(previous)
        state["history"] = (state["history"] + [previous])[-HISTORY_MAX:]
        state["active"] = ref.as_dict()
        self._save(state)
        return self._ref(previous)

    def previous(self) -> ModelRef | None:
        """What a rollback returns to; ModelStoreError when there is nothing."""
        history = self._state()["history"]
        if not history:
            raise ModelStoreError("rollback: no previous model version to roll back to "
                                  f"(active: {self.active() or 'the configured detect.model'})")
        return self._ref(history[-1])

    def rollback(self) -> ModelRef | None:
        """Make the previous version active again; returns it (None: the configured model)."""
        state = self._state()
        target = self.previous()
        state["history"].pop()
        state["active"] = None if target is None else target.as_dict()
        self._save(state)
        return target

    def _save(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.root / ACTIVE_FILE, state)

    def listing(self, running: ModelRef | None = None) -> list[dict[str, Any]]:
        """Every installed version, for `model list` and `model/list`."""
        active = self.active()
        out = []
        for ref in self.versions():
            rec = self.record(ref)
            out.append({**ref.as_dict(), "format": rec.get("format", ""),
                        "installed_at": rec.get("installed_at"), "active": ref == active,
                        **({"running": ref == running} if running is not None else {})})
        return out
