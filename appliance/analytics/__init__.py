"""Line and zone analytics after the tracker (docs/analytics.md).

    geometry.py   shapes in image coordinates: units, anchors, sides, crossings
    lines.py      counting lines with hysteresis
    zones.py      zones: enter/exit, occupancy, dwell, loiter and speed alerts
    motion.py     speed and heading; km/h through a ground-plane calibration
    events.py     the `line` and `zone` events
    processor.py  the track processor per camera: build(ctx, camera) -> CameraAnalytics
    mot.py        `appliance analyze --mot`: the same over MOTChallenge detections

Kept free of imports here: the config validates shapes with geometry.py.
"""
