"""The TensorRT engine cache, backend selection, `format: engine` manifests, the config
keys and INT8 calibration frames: everything about TensorRT that runs without TensorRT.

What needs TensorRT and a GPU (building, loading and running engines) is in
test_tensorrt_backend.py. Where a test here needs TensorRT to be "present", a fake
`tensorrt` and `cuda` module stand in, with only what backend selection reads of them:
`tensorrt.__version__` and cudart's cudaGetDeviceCount.
"""
from __future__ import annotations

import dataclasses
import enum
import io
import json
import logging
import os
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from appliance import config as config_mod
from appliance.detect import calibration
from appliance.detect import engine_build as trt_backend
from appliance.detect import engine_cache as ec
from appliance.detect.backends import choose, open_backend
from appliance.detect.engine_cache import EngineKey, EngineOptions
from appliance.detect.manifest import load_manifest
from appliance.errors import ApplianceError

KEY = EngineKey(tensorrt="8.6.2", gpu="Orin", compute="8.7", onnx_sha256="ab" * 32, precision="fp16",
                input_shape=(1, 3, 640, 640), batch=1)
OTHER_VALUES = {"tensorrt": "10.3.0", "gpu": "NVIDIA H200", "compute": "9.0", "onnx_sha256": "cd" * 32,
                "precision": "int8", "input_shape": (1, 3, 480, 480), "batch": 4, "dla_core": 0,
                "calibration": "camera:door"}


def _stored(cache: Path, key: EngineKey = KEY, data: bytes = b"engine bytes " * 100, model: str = "yolo",
            now: float | None = None) -> Path:
    return ec.store(cache, model, key, data, build_s=12.0, now=now)


# -- the key -------------------------------------------------------------------------------


def test_every_key_component_changes_the_key():
    assert set(OTHER_VALUES) == {f.name for f in dataclasses.fields(EngineKey)}
    digests = {KEY.digest()}
    for name, value in OTHER_VALUES.items():
        other = dataclasses.replace(KEY, **{name: value})
        digests.add(other.digest())
        assert ec.engine_path(Path("c"), "yolo", other) != ec.engine_path(Path("c"), "yolo", KEY)
        assert other.differences(KEY.as_dict()), name
    assert len(digests) == 1 + len(OTHER_VALUES)
    assert dataclasses.replace(KEY).digest() == KEY.digest()  # stable


def test_differences_say_what_changed_in_words():
    newer = dataclasses.replace(KEY, tensorrt="10.3.0")
    assert newer.differences(KEY.as_dict()) == ["TensorRT 8.6.2 -> 10.3.0"]
    assert newer.differences(KEY.as_dict(), parts=("gpu",)) == []


# -- lookup, invalidation, corruption -------------------------------------------------------


def test_a_stored_engine_is_found_and_its_record_says_what_it_is(tmp_path):
    assert ec.lookup(tmp_path, "yolo", KEY).path is None
    path = _stored(tmp_path)
    found = ec.lookup(tmp_path, "yolo", KEY)
    assert found.path == path and found.reason == ""
    record = json.loads(ec.sidecar_path(path).read_text())
    assert record["key"] == KEY.as_dict() and record["model"] == "yolo" and record["build_s"] == 12.0
    assert not list(tmp_path.glob("*.tmp"))  # written through temporary files, renamed


@pytest.mark.parametrize("change", ["tensorrt", "gpu", "compute", "onnx_sha256"])
def test_an_engine_for_another_tensorrt_gpu_or_onnx_is_rebuilt_never_loaded(tmp_path, change):
    _stored(tmp_path)
    here = dataclasses.replace(KEY, **{change: OTHER_VALUES[change]})
    found = ec.lookup(tmp_path, "yolo", here)
    assert found.path is None
    assert "built for another" in found.reason and ec._WORDS[change] in found.reason


def test_an_engine_copied_under_this_keys_name_is_refused_by_its_record(tmp_path):
    old = _stored(tmp_path)  # built for TensorRT 8.6.2
    upgraded = dataclasses.replace(KEY, tensorrt="10.3.0")
    target = ec.engine_path(tmp_path, "yolo", upgraded)
    target.write_bytes(old.read_bytes())
    ec.sidecar_path(target).write_text(ec.sidecar_path(old).read_text())
    found = ec.lookup(tmp_path, "yolo", upgraded)
    assert found.path is None and "TensorRT 8.6.2 -> 10.3.0" in found.reason


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_record", "bad_record"])
def test_a_corrupt_or_partial_engine_is_detected(tmp_path, damage):
    path = _stored(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:len(data) // 2]))
    elif damage == "no_record":
        ec.sidecar_path(path).unlink()
    else:
        ec.sidecar_path(path).write_text("{not json")
    found = ec.lookup(tmp_path, "yolo", KEY)
    assert found.path is None
    assert ("corrupt or partial" in found.reason) if damage in ("flip", "truncate") \
        else ("no readable build record" in found.reason)


def test_a_prebuilt_engine_is_checked_for_the_device_parts_only(tmp_path):
    path = _stored(tmp_path)
    here = EngineKey("8.6.2", "Orin", "8.7", "", "", (), 0)
    assert ec.check_engine(path, here, ec.DEVICE_PARTS) == ""
    elsewhere = dataclasses.replace(here, gpu="Xavier", compute="7.2")
    assert "GPU Orin -> Xavier" in ec.check_engine(path, elsewhere, ec.DEVICE_PARTS)


def test_removed_engine_goes_with_its_record_and_calibration(tmp_path):
    path = _stored(tmp_path)
    path.with_suffix(".calib").write_bytes(b"ranges")
    ec.remove(path)
    assert not path.exists() and not ec.sidecar_path(path).exists() and not path.with_suffix(".calib").exists()


# -- pruning ----------------------------------------------------------------------------------


def test_prune_drops_engines_that_cannot_load_here_and_keeps_the_newest(tmp_path):
    old_trt = _stored(tmp_path, dataclasses.replace(KEY, tensorrt="8.5.2"), now=1.0)
    other_gpu = _stored(tmp_path, dataclasses.replace(KEY, gpu="Xavier"), now=2.0)
    sizes = [_stored(tmp_path, dataclasses.replace(KEY, input_shape=(1, 3, s, s)), now=10.0 + i)
             for i, s in enumerate((320, 416, 480, 512))]
    other_model = _stored(tmp_path, dataclasses.replace(KEY, tensorrt="8.5.2"), model="ssd", now=3.0)
    current = _stored(tmp_path, now=20.0)
    orphan = tmp_path / "yolo-fp16-0000000000000000.engine"
    orphan.write_bytes(b"no record")
    stale, fresh = tmp_path / "x.engine.1.tmp", tmp_path / "y.engine.2.tmp"
    stale.write_bytes(b"")
    fresh.write_bytes(b"")
    os.utime(stale, (1000.0, 1000.0))
    gone = ec.prune(tmp_path, "yolo", KEY, keep=3, now=1000.0 + ec.STALE_TMP_S + 1)
    assert not old_trt.exists() and not other_gpu.exists() and not orphan.exists()
    assert current.exists() and other_model.exists()  # another model's engines are its own business
    assert [p.exists() for p in sizes] == [False, False, True, True]  # current + the 2 newest
    assert not stale.exists() and fresh.exists()
    assert set(gone) >= {old_trt, other_gpu, orphan, stale}


# -- build status -------------------------------------------------------------------------------


def test_build_status_is_text_for_the_dashboard():
    s = ec.BuildStatus()
    assert s.text() == "" and s.current() is None
    s.start("yolo", "fp16")
    s.update(0.354)
    assert s.text() == "building engine 35 %" and s.current()["model"] == "yolo"
    s.finish()
    assert s.text() == ""


# -- backend selection: a fake TensorRT, absent or present ------------------------------------


class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def _fake_cuda(devices: int) -> types.ModuleType:
    cudart = types.ModuleType("cuda.cudart")
    cudart.cudaError_t = _Err
    cudart.cudaGetDeviceCount = lambda: (_Err.cudaSuccess, devices) if devices else (_Err.cudaErrorNoDevice, 0)
    cuda = types.ModuleType("cuda")
    cuda.cudart = cudart
    return cuda


@pytest.fixture
def fake_runtime(monkeypatch):
    """install(tensorrt=bool, devices=N): what `import tensorrt` / cuda-python find."""
    def install(tensorrt: bool, devices: int = 1, cuda: bool = True) -> None:
        if tensorrt:
            fake = types.ModuleType("tensorrt")
            fake.__version__ = "10.3.0"
            monkeypatch.setitem(sys.modules, "tensorrt", fake)
        else:
            monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda", _fake_cuda(devices) if cuda else None)
        trt_backend.unavailable.cache_clear()

    yield install
    trt_backend.unavailable.cache_clear()


def test_auto_picks_tensorrt_where_it_imports_and_a_gpu_is_present(fake_runtime):
    fake_runtime(tensorrt=True, devices=1)
    assert choose("onnx") == ("tensorrt", "")
    assert choose("onnx", engines=False) == ("onnxruntime", "")  # classifiers stay on ONNX Runtime
    assert choose("tflite") == ("litert", "")
    assert choose("onnx", "onnxruntime") == ("onnxruntime", "")


@pytest.mark.parametrize("tensorrt, devices, cuda, why", [
    (False, 1, True, "TensorRT is not installed"),
    (True, 0, True, "no usable GPU"),
    (True, 1, False, "cuda-python is not"),
])
def test_auto_falls_back_to_onnxruntime_and_says_why(fake_runtime, tensorrt, devices, cuda, why):
    fake_runtime(tensorrt=tensorrt, devices=devices, cuda=cuda)
    name, reason = choose("onnx")
    assert name == "onnxruntime" and why in reason


def test_auto_without_tensorrt_runs_the_onnx_model_on_onnxruntime(fake_runtime, assets_dir, tmp_path, caplog):
    fake_runtime(tensorrt=False)
    manifest = load_manifest("yolov8-fall-test", assets_dir)
    with caplog.at_level(logging.INFO, logger="appliance.detect.backends"):
        be = open_backend(manifest, "auto", 1, engine=EngineOptions(cache_dir=tmp_path))
    assert be.name == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records if "not TensorRT" in r.getMessage()]
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0] and "ONNX Runtime" in lines[0]
    out = be.run(np.zeros((1, 3, 640, 640), np.float32))
    assert out[0].shape == (1, 6, 8400)
    assert not (tmp_path / "engines").exists()


def test_explicit_tensorrt_without_tensorrt_is_a_clear_error(fake_runtime, assets_dir, tmp_path):
    fake_runtime(tensorrt=False)
    manifest = load_manifest("yolov8-fall-test", assets_dir)
    with pytest.raises(ApplianceError, match=r"detect\.backend: tensorrt needs TensorRT, which cannot run "
                                             r"here: TensorRT is not installed.*use auto or onnxruntime"):
        open_backend(manifest, "tensorrt", 1, engine=EngineOptions(cache_dir=tmp_path))


def test_threads_auto_is_one_when_tensorrt_runs_the_model(fake_runtime, assets_dir):
    from appliance.detect.threads import auto_threads

    fake_runtime(tensorrt=True, devices=1)
    manifest = load_manifest("yolov8-fall-test", assets_dir)
    assert auto_threads(manifest, "auto", None, fps_of=lambda n: pytest.fail("measured"), cores=4) == 1


# -- manifests: format engine ---------------------------------------------------------------


ENGINE_MANIFEST = {"name": "yolo-trt", "version": "1", "file": "yolo.engine", "format": "engine",
                   "input": {"width": 640, "height": 640, "resize": "letterbox", "layout": "nchw",
                             "dtype": "float32"},
                   "decoder": "yolo", "labels": ["person"]}


def _manifest(tmp_path: Path, **changes) -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "yolo.onnx").write_bytes(b"onnx placeholder")
    raw = {k: v for k, v in {**ENGINE_MANIFEST, **changes}.items() if v is not None}
    (d / "model.yaml").write_text(yaml.safe_dump(raw))
    return d / "model.yaml"


def test_format_engine_with_its_onnx_file_loads_before_the_engine_exists(tmp_path):
    m = load_manifest(_manifest(tmp_path, onnx_file="yolo.onnx"), tmp_path / "assets")
    assert m.format == "engine" and m.onnx_file == (tmp_path / "m" / "yolo.onnx").resolve()
    assert m.file == (tmp_path / "m" / "yolo.engine").resolve() and not m.file.exists()


def test_format_engine_without_onnx_file_needs_the_engine(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: file: file yolo\.engine not found"):
        load_manifest(_manifest(tmp_path), tmp_path / "assets")
    (tmp_path / "m" / "yolo.engine").write_bytes(b"x")
    m = load_manifest(_manifest(tmp_path), tmp_path / "assets")
    assert m.onnx_file is None and m.file.name == "yolo.engine"


def test_manifest_engine_errors_name_the_key(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: onnx_file: only applies to format engine"):
        load_manifest(_manifest(tmp_path, format="onnx", file="yolo.onnx", onnx_file="yolo.onnx"), tmp_path)
    with pytest.raises(ApplianceError, match=r"model\.yaml: onnx_file: file missing\.onnx not found"):
        load_manifest(_manifest(tmp_path, onnx_file="missing.onnx"), tmp_path)
    with pytest.raises(ApplianceError, match=r"labels: required for format engine"):
        load_manifest(_manifest(tmp_path, labels=None, onnx_file="yolo.onnx"), tmp_path)


def test_a_format_engine_model_without_tensorrt_is_refused_naming_the_model(fake_runtime, tmp_path):
    fake_runtime(tensorrt=False)
    m = load_manifest(_manifest(tmp_path, onnx_file="yolo.onnx"), tmp_path)
    with pytest.raises(ApplianceError, match=r"model\.yaml: format engine needs TensorRT, which cannot run here"):
        open_backend(m, "auto", 1, engine=EngineOptions(cache_dir=tmp_path))
    with pytest.raises(ApplianceError, match=r"backend onnxruntime cannot run .*format engine"):
        open_backend(m, "onnxruntime", 1)


# -- config ----------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str, **kw):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p, lambda: config_mod.load(p, **kw)


@pytest.mark.parametrize("detect, message", [
    ("{model: yolov8-fall-test, classes: [], precision: int8}",
     "detect.calibration_source: required for precision int8"),
    ("{model: yolov8-fall-test, classes: [], calibration_source: /x}",
     "detect.calibration_source: only applies to precision int8, not fp16"),
    ("{model: yolov8-fall-test, classes: [], backend: onnxruntime, precision: fp32}",
     "detect.precision: only applies to the TensorRT backend"),
    ("{model: yolov8-fall-test, classes: [], precision: fp32, dla_core: 0}",
     "detect.dla_core: the DLA runs fp16 or int8 only"),
    ("{model: yolov8-fall-test, classes: [], dla_core: 9}", "detect.dla_core"),
    ("{model: yolov8-fall-test, classes: [], precision: fp8}", "detect.precision"),
])
def test_engine_config_errors_name_file_and_key(tmp_path, detect, message):
    p, load = _config(tmp_path, f"detect: {detect}\n")
    with pytest.raises(ApplianceError) as e:
        load()
    assert any(line.startswith(f"{p}: ") and message in line for line in str(e.value).splitlines()), str(e.value)


def test_backend_tensorrt_where_it_cannot_run_is_an_error_or_with_no_files_a_warning(
        fake_runtime, tmp_path, assets_dir):
    fake_runtime(tensorrt=False)
    text = "detect: {model: yolov8-fall-test, classes: [], backend: tensorrt}\n"
    p, load = _config(tmp_path, text, assets_dir=assets_dir)
    with pytest.raises(ApplianceError, match=r"c\.yaml: detect\.backend: tensorrt needs TensorRT, which cannot "
                                             r"run here: TensorRT is not installed"):
        load()
    warnings: list[str] = []
    cfg = config_mod.load(p, assets_dir, files="warn", warnings=warnings)
    assert cfg.detect.backend == "tensorrt"
    assert any("detect.backend" in w and "must run on the device" in w for w in warnings)


def test_calibration_source_must_be_a_camera_of_the_config_or_exist(tmp_path, assets_dir):
    base = ("cameras: [{id: door, source: 'asset:vtest.avi'}]\n"
            "detect: {model: yolov8-fall-test, classes: [], precision: int8, calibration_source: %s}\n")
    p, load = _config(tmp_path, base % "'camera:gate'", assets_dir=assets_dir)
    with pytest.raises(ApplianceError, match=r"detect\.calibration_source: camera:gate: no camera 'gate' "
                                             r"in cameras\[\] \(cameras: door\)"):
        load()
    p, load = _config(tmp_path, base % "/nowhere/frames", assets_dir=assets_dir)
    with pytest.raises(ApplianceError, match=r"detect\.calibration_source: /nowhere/frames: not a folder"):
        load()
    p, load = _config(tmp_path, base % "'camera:door'", assets_dir=assets_dir)
    cfg = load()
    opts = ec.options_from_config(cfg, tmp_path / "data", assets_dir)
    assert opts.precision == "int8" and opts.calibration_source == "camera:door"
    assert opts.cameras == {"door": "asset:vtest.avi"} and opts.cache_dir == tmp_path / "data" / "engines"


# -- calibration frames ---------------------------------------------------------------------------


def test_calibration_frames_from_a_video_are_spread_and_shrunk(assets_dir):
    src = calibration.resolve(str(assets_dir / "vtest.avi"), {})
    assert src.kind == "video"
    frames = calibration.sample(src, 8, 320, 320)
    assert len(frames) == 8
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)  # 768x576 fit into 320
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])


def test_calibration_frames_from_a_folder_skip_unreadable_images(assets_dir, tmp_path, caplog):
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    for i in range(5):
        ok, img = cap.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), img)
    cap.release()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = calibration.resolve(str(tmp_path), {})
    with caplog.at_level(logging.WARNING):
        frames = calibration.sample(src, 100, 640, 640)
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3)  # 768x576 fit into 640x640
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_calibration_frames_from_a_camera_of_the_config(assets_dir):
    src = calibration.resolve("camera:door", {"door": "asset:vtest.avi"}, assets_dir)
    assert src.kind == "camera" and src.camera_id == "door"
    assert len(calibration.sample(src, 4, 640, 640, assets_dir)) == 4


def test_calibration_source_errors_name_the_key(tmp_path):
    with pytest.raises(ApplianceError, match=r"detect\.calibration_source: camera:x: no camera 'x'"):
        calibration.resolve("camera:x", {"door": "a"})
    with pytest.raises(ApplianceError, match=r"detect\.calibration_source: .*not a folder of images"):
        calibration.resolve(str(tmp_path / "none"), {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ApplianceError, match=r"no images"):
        calibration.sample(calibration.resolve(str(empty), {}), 4, 64, 64)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    with pytest.raises(ApplianceError, match=r"junk\.avi"):
        calibration.sample(calibration.resolve(str(junk), {}), 4, 64, 64)


def test_calibration_batches_are_whole_and_made_on_demand(assets_dir):
    from appliance.detect import preprocess

    manifest = load_manifest("yolov8-fall-test", assets_dir)
    frames = calibration.sample(calibration.resolve(str(assets_dir / "vtest.avi"), {}), 5, 640, 640)
    made = []

    def prepare(fs):
        made.append(len(fs))
        return preprocess.prepare(fs, manifest.input)[0]

    feeds = calibration.batches(frames, 2, prepare)
    assert len(feeds) == 2 and made == []
    x = feeds[1]()
    assert x.shape == (2, 3, 640, 640) and x.dtype == np.float32 and made == [2]
    with pytest.raises(ApplianceError, match="fewer than one batch"):
        calibration.batches(frames[:1], 2, prepare)


# -- `appliance model build` without TensorRT, and its bar ------------------------------------------


def test_model_build_without_tensorrt_says_so(fake_runtime, capsys):
    from appliance.cli import main

    fake_runtime(tensorrt=False)
    assert main(["model", "build", "--model", "yolov8-fall-test"]) == 1
    err = capsys.readouterr().err
    assert "model build needs TensorRT and a GPU, which are not here: TensorRT is not installed" in err


def test_progress_bar_draws_on_a_terminal_only():
    from appliance.detect.engine_cli import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    show = progress_bar(out, "yolo")
    for f in (0.0, 0.35, 0.35, 1.0):
        show(f)
    text = out.getvalue()
    assert text.count("\r") == 3 and " 35 %" in text and text.endswith("100 %\n")
    plain = io.StringIO()
    progress_bar(plain, "yolo")(0.5)
    assert plain.getvalue() == ""


def test_input_shapes_for_the_build(assets_dir):
    m = load_manifest("yolov8-fall-test", assets_dir)
    assert trt_backend._shapes(m, (1, 3, 640, 640), 4) == ((1, 3, 640, 640),) * 3
    assert trt_backend._shapes(m, (-1, 3, -1, -1), 4) == ((1, 3, 640, 640), (4, 3, 640, 640), (4, 3, 640, 640))
    with pytest.raises(ApplianceError, match="input dimension 1 is dynamic"):
        trt_backend._shapes(m, (1, -1, 640, 640), 4)
