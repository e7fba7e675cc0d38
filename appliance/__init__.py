"""Edge video-analytics appliance: capture → detect → track → events → store."""
import os

__version__ = "0.1.0"

# OpenCV and FFmpeg write to stderr on their own; the appliance reports camera and frame
# problems itself, in its log. Set these variables in the environment to see theirs.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
