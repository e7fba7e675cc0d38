"""What the detector benchmarks share: their options, the config, the demo frames, bare fps
at every thread count, what detect.threads auto chose, pipeline frame counts from status(),
and quantiles from a Prometheus histogram."""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import cv2
from prometheus_client import REGISTRY

from appliance import paths
from appliance.assets import fetch
from appliance.config import Config
from appliance.detect import load_detector, load_manifest
from appliance.detect import threads as auto


def thread_count(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return n


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400, help="frames of vtest.avi per run (default 400)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each kept")
    ap.add_argument("--threads", type=thread_count,
                    help="the pipeline's inference threads, N or auto (default: the config's)")
    return ap


def setup(args: argparse.Namespace) -> tuple[Config, Path, list]:
    """The demo config, the asset dir and the first --frames frames of vtest.avi, decoded."""
    logging.basicConfig(level=logging.WARNING)
    assets = paths.assets_dir()  # the one cache, whatever data directory a bench uses
    fetch(assets)
    cfg = Config()
    if getattr(args, "threads", None):
        cfg.detect.threads = args.threads
    elif cfg.detect.threads != "auto":  # a config from before detect.threads: auto
        logging.getLogger("bench").warning(
            "the config's default detect.threads is %r, not 'auto': the bench uses auto",
            cfg.detect.threads)
        cfg.detect.threads = "auto"
    cap = cv2.VideoCapture(str(assets / "vtest.avi"))
    frames = []
    while len(frames) < args.frames:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return cfg, assets, frames


def bare_fps(cfg: Config, assets: Path, frames: list, threads: int) -> float:
    """The detector alone with `threads` threads on frames decoded beforehand: the ceiling
    for any pipeline using that many."""
    d = cfg.detect
    det = load_detector(d.model, assets, backend=d.backend, threshold=d.threshold,
                        classes=d.classes or None, threads=threads)
    det.detect([frames[0]])  # warm-up
    t0 = time.perf_counter()
    for f in frames:
        det.detect([f])
    return len(frames) / (time.perf_counter() - t0)


def thread_counts() -> list[int]:
    """1 up to the usable cores (what detect.threads auto would try)."""
    return auto.candidates(auto.usable_cores())


class Bare:
    """Bare detector fps at every thread count, over alternating rounds; best of each kept."""

    def __init__(self, counts: list[int] | None = None):
        self.counts = counts or thread_counts()
        self.rounds: dict[int, list[float]] = {n: [] for n in self.counts}

    def measure(self, cfg: Config, assets: Path, frames: list) -> None:
        """One round: every thread count once."""
        for n in self.counts:
            self.rounds[n].append(bare_fps(cfg, assets, frames, n))

    def fps(self, n: int) -> float:
        return max(self.rounds[n])

    @property
    def best_threads(self) -> int:
        return max(self.counts, key=self.fps)

    @property
    def best(self) -> float:
        return self.fps(self.best_threads)

    def lines(self, label: str = "bare detector (decode excluded)") -> list[str]:
        out = []
        for n in self.counts:
            mark = "   <- best" if n == self.best_threads and len(self.counts) > 1 else ""
            out.append(f"{label}, {n:2d} thread(s): {self.fps(n):7.1f} fps   "
                       f"rounds: {', '.join(f'{x:.1f}' for x in self.rounds[n])}{mark}")
        return out


def auto_threads(cfg: Config, assets: Path) -> tuple[int, str]:
    """What detect.threads auto chooses for the config's model here, and its measurement.

    Measures now (no cache file), as a fresh appliance would; a Pipeline built later in
    this process gets the same choice (auto_threads remembers it per process).
    """
    manifest = load_manifest(cfg.detect.model, assets)
    n = auto.auto_threads(manifest, cfg.detect.backend)
    seen = auto.remembered(manifest, cfg.detect.backend)
    why = auto.describe(seen[1], auto.usable_cores()) + ", inference only" if seen else "not measured"
    return n, why


def pipeline_threads(cfg: Config, assets: Path) -> tuple[int | str, str]:
    """The config's detect.threads and, for auto, what it resolves to: (threads, text)."""
    t = cfg.detect.threads
    if t == "auto":
        n, why = auto_threads(cfg, assets)
        return n, f"auto -> {n} ({why})"
    return t, f"{t} (set)"


def frames_done(status: dict) -> int:
    """Frames through the tracker, all cameras, from Pipeline.status()."""
    return sum(int(c["frames"]) for c in status["cameras"].values())


# -- quantiles from a Prometheus histogram ----------------------------------------------------

def histogram_buckets(name: str) -> dict[float, float] | None:
    """Cumulative counts by upper bound (le) of histogram `name`, summed over its labels;
    None when no such histogram is registered."""
    for family in REGISTRY.collect():
        if family.name != name or family.type != "histogram":
            continue
        buckets: dict[float, float] = {}
        for sample in family.samples:
            if sample.name == name + "_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
        return buckets
    return None


def bucket_diff(after: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    """What was observed between two snapshots (the registry is cumulative per process)."""
    before = before or {}
    return {le: c - before.get(le, 0.0) for le, c in after.items()}


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile (0..1) from cumulative bucket counts, interpolated linearly inside the
    bucket it falls in, as Prometheus's histogram_quantile() does: a value in the +Inf
    bucket reads as the highest finite bound. NaN when nothing was observed."""
    les = sorted(buckets)
    if not les or buckets[les[-1]] <= 0:
        return math.nan
    total = buckets[les[-1]]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank and c > prev_c:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le
