"""The detector as the config describes it: one place that turns `detect` (and the TensorRT
keys) into load_detector's arguments, for `appliance run`, `detect` and `selftest`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.detect.detector import Detector, load_detector


def configured_detector(cfg: Any, assets_dir: Path, data_dir: Path, *, model: str | None = None,
                        threshold: float | None = None, all_classes: bool = False,
                        threads: int | str | None = None) -> Detector:
    """detect.model (or `model`, a name or manifest path) with the config's backend, classes,
    threads and engine options; the keyword arguments override what the command asks for."""
    from appliance.detect import engine_cache

    d = cfg.detect
    return load_detector(model or d.model, assets_dir, backend=d.backend,
                         threshold=d.threshold if threshold is None else threshold,
                         classes=None if all_classes else (d.classes or None),
                         threads=d.threads if threads is None else threads, cache_dir=data_dir,
                         engine=engine_cache.options_from_config(cfg, data_dir, assets_dir))
