"""One typed config, validated when it loads.

The YAML file maps onto the pydantic models of this package, one module per section.
Unknown keys, wrong types, values out of range and broken rules between keys are errors
that name the file and the key's path ("cameras[0].loop: expected true or false, got str
'yes please'"), all of them at once. Anything left out takes the default written in the
models, so an empty file (or no file) is the built-in demo: the demo video, the default
model and SQLite under the data directory. docs/config.md is generated from the models
(python -m appliance.config.docs).
"""
from __future__ import annotations

from appliance.config.adaptive import AdaptiveConfig
from appliance.config.base import FileCheck, secret_value
from appliance.config.cameras import CameraConfig, classify_source
from appliance.config.classify import ClassifyConfig
from appliance.config.detect import DetectConfig
from appliance.config.device import DeviceConfig
from appliance.config.events import EventsConfig
from appliance.config.loader import dump, from_dict, from_text, load, to_dict
from appliance.config.log import LogConfig
from appliance.config.power import PowerConfig, PowerScheduleEntry
from appliance.config.root import Config
from appliance.config.secrets import MASK, mask_secrets, redact_uri
from appliance.config.store import StoreConfig
from appliance.config.track import TrackConfig
from appliance.config.uplink import UplinkBacklogConfig, UplinkConfig, UplinkTlsConfig
from appliance.config.web import WebConfig

__all__ = [
    "AdaptiveConfig", "CameraConfig", "ClassifyConfig", "Config", "DetectConfig", "DeviceConfig", "EventsConfig",
    "FileCheck", "LogConfig", "MASK", "PowerConfig", "PowerScheduleEntry", "StoreConfig", "TrackConfig",
    "UplinkBacklogConfig", "UplinkConfig", "UplinkTlsConfig", "WebConfig", "classify_source", "dump",
    "from_dict", "from_text", "load", "mask_secrets", "redact_uri", "secret_value", "to_dict",
]
