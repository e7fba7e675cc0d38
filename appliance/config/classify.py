"""`classify`: the second-stage classifier on track crops (appliance/classify/)."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from appliance.config.base import FileCheck, Problems, Section, Text, key

DEFAULT_CLASSES = ("car", "truck", "bus", "motorcycle")

Budget = Union[Literal["auto"], Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]]


class ClassifyConfig(Section):
    enabled: bool = key(True, doc="classify tracked objects of `classes` (e.g. each vehicle's type)")
    model: Text = key("efficientnet-lite0-vehicle",
                      doc="a classifier folder under `models/`, or the path of its `model.yaml` (docs/classify.md)")
    backend: Literal["auto", "litert", "onnxruntime"] = key("auto", doc="as `detect.backend`")
    classes: list[Text] = key(factory=lambda: list(DEFAULT_CLASSES), type="list of labels",
                              shown=", ".join(DEFAULT_CLASSES), doc="detector labels whose tracks are classified")
    interval_frames: int = key(3, lo=1, hi=1000,
                               doc="frames between two classification attempts of one track, once `min_votes` crops "
                                   "have been asked for (those go one a frame)")
    # 2, not 3: on the shipped videos 2 decides every vehicle track, including a car seen for
    # four frames, with the same types as 3 where 3 decides (scripts/bench classify).
    min_votes: int = key(2, lo=1, hi=100, doc="votes the winning type needs before it is decided")
    min_share: float = key(0.6, lo=0.0, hi=1.0,
                           doc="share of the votes the winning type needs before it is decided")
    max_attempts: int = key(16, lo=1, hi=1000,
                            doc="crops classified at most per track; after them an undecided track stays so")
    budget: Budget = key(
        "auto", type="auto or crops per second",
        doc="most crops classified per second; `auto`: what keeps the classifier under 5 % of the "
            "machine's cores, from its measured time per crop. Requests over it are counted, not queued")
    queue_size: int = key(8, lo=1, hi=1000,
                          doc="crop requests waiting for the classifier; when full, the oldest is dropped "
                              "and counted (detection and tracking never wait)")

    @model_validator(mode="after")
    def _rules(self) -> "ClassifyConfig":
        p = Problems()
        if self.min_votes > self.max_attempts:
            p.add("min_votes", f"must not exceed classify.max_attempts ({self.max_attempts})")
        p.raise_any()
        return self


def check_classifier(c: ClassifyConfig, files: FileCheck, p: Problems) -> None:
    """A classifier that cannot be found only warns: the appliance then runs without it."""
    if not c.enabled:
        return
    from appliance.classify.manifest import load_manifest
    from appliance.errors import ApplianceError

    try:
        load_manifest(c.model, files.assets_dir)
    except ApplianceError as e:
        files.warn("classify.model", f"{e}; the appliance will run without classification")
