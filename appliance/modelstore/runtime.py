"""How the pipeline uses the model store: which detector it starts with, and the manager
and drift monitor it runs beside the detect stage (pipeline.py calls these three)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from appliance import __version__, metrics
from appliance.detect.configured import configured_detector
from appliance.modelstore.drift import DriftMonitor, DriftPolicy
from appliance.modelstore.store import ModelRef, ModelStore, ModelStoreError
from appliance.modelstore.swap import ModelManager, WatchPolicy

log = logging.getLogger(__name__)


def loader(cfg, assets: Path, data_dir: Path) -> Callable[[Path | None], Any]:
    """load(manifest path, or None for detect.model) with the pipeline's detect settings."""
    d = cfg.detect

    def load(path: Path | None):
        # The tracker sees detections down to track.low_threshold (they keep tracks going);
        # only those from detect.threshold up start tracks, and none reaches users but as a track.
        return configured_detector(cfg, assets, data_dir, model=str(path) if path is not None else None,
                                   threshold=min(d.threshold, cfg.track.low_threshold))
    return load


def first_detector(store: ModelStore, load: Callable[[Path | None], Any]) -> tuple[Any, ModelRef | None]:
    """The store's active version when there is one (and it is intact), else detect.model."""
    try:
        active = store.active()
        if active is not None:
            return load(store.verify(active)), active
    except ModelStoreError as e:
        log.error("model store: %s; starting with detect.model instead", e)
    return load(None), None


def attach(pipeline, running: ModelRef | None, load: Callable[[Path | None], Any],
           store: ModelStore, assets: Path) -> tuple[ModelManager, DriftMonitor]:
    """The model manager (a service: it polls the store) and the drift monitor, both
    watching the detect stage's results."""
    cfg = pipeline.cfg

    def on_swap(detector) -> None:
        pipeline.detector = detector  # status and metrics name the running model
        be = detector.backend
        metrics.BUILD.info({"version": __version__, "model": detector.name,
                            "model_version": detector.version, "backend": f"{be.name}/{be.device}"})

    manager = ModelManager(store, pipeline.detect, load, running, state=pipeline.sink.state,
                           on_swap=on_swap, watch=WatchPolicy(score=cfg.detect.threshold), assets_dir=assets)
    drift = DriftMonitor(DriftPolicy(min_score=min(cfg.detect.threshold, DriftPolicy.min_score)),
                         state=pipeline.sink.state)
    pipeline.detect.observers.append(drift.observe)
    manager.drift = drift
    pipeline.services.append(manager)
    return manager, drift
