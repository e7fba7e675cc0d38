"""Stand-ins for what cannot run here: a Jetson's and a Raspberry Pi's tools and sysfs.

bin/nvpmodel, bin/jetson_clocks, bin/vcgencmd imitate the real tools' documented output
(sources in each file); they keep their state under $FAKE_JETSON_ROOT, the same fake
tree that sysfs.py builds and the appliance reads through power.root.
"""
