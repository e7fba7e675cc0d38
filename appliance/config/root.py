"""The whole config: one key per section, and the checks that need more than one section
or the file system."""
from __future__ import annotations

from pydantic import ValidationInfo, field_validator, model_validator

from appliance.config.adaptive import AdaptiveConfig
from appliance.config.analytics import check_analytics_frames
from appliance.config.base import FileCheck, Problems, Section, key
from appliance.config.cameras import CameraConfig, check_camera_files, check_cameras, default_cameras
from appliance.config.classify import ClassifyConfig, check_classifier
from appliance.config.detect import DetectConfig, check_calibration, check_model
from appliance.config.device import DeviceConfig
from appliance.config.events import EventsConfig
from appliance.config.log import LogConfig
from appliance.config.power import PowerConfig
from appliance.config.snapshots import SnapshotsConfig
from appliance.config.store import StoreConfig
from appliance.config.track import TrackConfig
from appliance.config.uplink import UplinkConfig, check_uplink_files
from appliance.config.web import WebConfig


class Config(Section):
    """The appliance's config file (docs/config.md). Every key is optional."""

    device: DeviceConfig = key(factory=DeviceConfig, doc="who this appliance is")
    cameras: list[CameraConfig] = key(factory=default_cameras,
                                      shown="one camera `demo`, `asset:vtest.avi`, with a line and a zone",
                                      doc="the cameras, at least one")
    detect: DetectConfig = key(factory=DetectConfig, doc="the detector")
    track: TrackConfig = key(factory=TrackConfig, doc="the tracker (SORT)")
    classify: ClassifyConfig = key(factory=ClassifyConfig, doc="the classifier of tracked objects")
    events: EventsConfig = key(factory=EventsConfig, doc="track events")
    snapshots: SnapshotsConfig = key(factory=SnapshotsConfig, doc="snapshots of the tracks worth a look")
    store: StoreConfig = key(factory=StoreConfig, doc="the SQLite writer")
    log: LogConfig = key(factory=LogConfig, doc="logging")
    adaptive: AdaptiveConfig = key(factory=AdaptiveConfig, doc="detection stride per camera")
    power: PowerConfig = key(factory=PowerConfig, doc="power modes and thermal")
    web: WebConfig = key(factory=WebConfig, doc="the dashboard")
    uplink: UplinkConfig = key(factory=UplinkConfig, doc="MQTT store-and-forward")

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        check_cameras(cameras)
        return cameras

    @model_validator(mode="after")
    def _files(self, info: ValidationInfo) -> "Config":
        """Files named in the config; only with a FileCheck in the validation context."""
        files = FileCheck.of(info)
        if files is None:
            return self
        p = Problems()
        check_camera_files(self.cameras, files, p)
        check_analytics_frames(self.cameras, files, p)
        check_model(self.detect, files, p)
        check_calibration(self.detect, [c.id for c in self.cameras], files, p)
        check_classifier(self.classify, files, p)
        check_uplink_files(self.uplink, files, p)
        p.raise_any()
        return self
