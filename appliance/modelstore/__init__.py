"""Model versions on the device: a store, a self-check, a switch without stopping, drift.

    store = ModelStore(data_dir)            # <data_dir>/models/<name>/<version>/
    ref = store.install("ssd-mobilenet-v2", assets_dir, version="2")
    manager.activate(ref)                   # a running pipeline's ModelManager (swap.py)

docs/models.md describes it.
"""
from __future__ import annotations

from appliance.modelstore.store import ModelRef, ModelStore, ModelStoreError, parse_ref

__all__ = ["ModelRef", "ModelStore", "ModelStoreError", "parse_ref"]
