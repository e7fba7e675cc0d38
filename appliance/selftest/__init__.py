"""The installer's self-test (`appliance selftest`, the dashboard's self-test page).

    report = run_selftest(cfg, data_dir, config_path=path)   # run.py
    report.ok, report.checks, report.summary(), report.to_json()   # report.py

checks.py tests what the config names (safe mode, the config, cameras, detector,
classifier), system.py the device (storage, clock, temperatures, dashboard), mqtt.py the
uplink. docs/installer-guide.md, "Reading the self-test", explains every check.
"""
from __future__ import annotations

from appliance.selftest.report import Check, Report
from appliance.selftest.run import GROUPS, run_selftest

__all__ = ["GROUPS", "Check", "Report", "run_selftest"]
