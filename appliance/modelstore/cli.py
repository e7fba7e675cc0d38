"""`appliance model list | install PATH_OR_NAME | activate NAME@VERSION | rollback`.

They work on the store in the data directory (store.py). `activate` runs the self-check
here, against the active model, before it changes active.json; a running appliance sees
the change within seconds, checks again and switches between frames (swap.py). Other
`model` commands (`build`, TensorRT) register on the same group: register() returns it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from appliance import paths
from appliance.errors import ApplianceError
from appliance.modelstore.store import ModelStore, ModelStoreError, parse_ref


def register(sub: Any, common: argparse.ArgumentParser) -> Any:
    """Adds the `model` group; returns its subparsers, for other `model` commands."""
    mdl = sub.add_parser("model", help="model versions on this device: list, install, activate, rollback")
    model_sub = mdl.add_subparsers(dest="model_command", required=True)
    ls = model_sub.add_parser("list", parents=[common], help="installed versions, the active one, the history")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    ins = model_sub.add_parser("install", parents=[common],
                               help="copy a model (models/<name>, a model.yaml or its folder) into the store")
    ins.add_argument("model", metavar="PATH_OR_NAME")
    ins.add_argument("--version", help="store it as this version (default: the manifest's version)")
    ins.add_argument("--sha256", help="refuse it unless the weights file has this sha256")
    ins.set_defaults(func=cmd_install)
    act = model_sub.add_parser("activate", parents=[common],
                               help="self-check NAME@VERSION against the active model, then make it active")
    act.add_argument("ref", metavar="NAME@VERSION")
    act.add_argument("--config", help="YAML config for the detect settings (default: the built-in demo)")
    act.set_defaults(func=cmd_activate)
    rb = model_sub.add_parser("rollback", parents=[common], help="make the previously active version active again")
    rb.set_defaults(func=cmd_rollback)
    return model_sub


def _store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(paths.data_dir(args.data_dir))


def _name(ref: Any) -> str:
    return "detect.model (from the config)" if ref is None else str(ref)


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store.listing()
    if args.json:
        print(json.dumps({"active": None if store.active() is None else str(store.active()), "versions": rows,
                          "history": [None if r is None else str(r) for r in store.history()]}))
        return 0
    if not rows:
        print(f"no model versions in {store.root}; the configured detect.model runs")
    for r in rows:
        print(f"{'*' if r['active'] else ' '} {r['name']}@{r['version']}  {r['format']}")
    print(f"active: {_name(store.active())}; rollback goes to: "
          f"{_name(store.history()[-1]) if store.history() else 'nothing (no history)'}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    store = _store(args)
    # It is loaded once as the pipeline would, before it is stored.
    ref = store.install(args.model, paths.assets_dir(), version=args.version, sha256=args.sha256)
    print(f"installed {ref} in {store.path(ref)}; 'appliance model activate {ref}' to use it")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    from appliance import config as config_mod
    from appliance.modelstore.runtime import loader
    from appliance.modelstore.selfcheck import self_check

    store = _store(args)
    ref = parse_ref(args.ref)
    path = store.verify(ref)  # unknown version, or files changed since install: refused
    data, assets = paths.data_dir(args.data_dir), paths.assets_dir()
    cfg = config_mod.load(args.config, assets)
    load = loader(cfg, assets, data)
    try:
        candidate = load(path)
    except ApplianceError as e:
        raise ModelStoreError(f"model {ref}: cannot be loaded: {e}") from None
    active = store.active()
    current = load(None if active is None else store.verify(active))
    if list(candidate.labels) != list(current.labels):
        raise ModelStoreError(f"model {ref}: its labels differ from the active model's; "
                              "change detect.model in the config instead")
    report = self_check(candidate, current, assets_dir=assets)
    if not report.ok:
        raise ModelStoreError(f"model {ref}: self-check failed: " + "; ".join(report.problems))
    previous = store.set_active(ref)
    print(f"activated {ref} (was {_name(previous)}): {report.latency_ms:.1f} ms per image "
          f"(active model {report.baseline_ms:.1f} ms), found {report.found}; "
          "a running appliance switches within seconds", file=sys.stderr)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    was = store.active()
    target = store.rollback()
    print(f"rolled back from {_name(was)} to {_name(target)}", file=sys.stderr)
    return 0
