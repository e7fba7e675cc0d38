"""`detect.threads: auto`: the inference thread count that gets the most frames through.

How many threads the runtime should use depends on the model, the runtime and the
machine: on a 2-core x86 box the default detector (SSD MobileNet v2 int8, LiteRT with
XNNPACK) runs at about 29 fps on one thread and 52 fps on two (`scripts/bench pipeline`),
so the old default of "one core less than the machine has" left nearly half of it
unused; on other machines and models a second thread helps little, or a thread per core
is slower than one less because the threads wait on each other. Guessing a rule for all of
them is hard, measuring is cheap, so auto measures:

- Candidates: 1, 2, ... up to the usable cores, len(os.sched_getaffinity(0)), which
  respects taskset and cgroup cpusets (os.cpu_count() counts the whole machine). Above
  8 cores, only 1-8, 12, 16, 24, 32, 48, 64 and the core count are tried.
- For each: open the backend with that many threads, run one warm-up inference on a
  model-sized input, then time a batch of inferences (about 0.4 s, at least 3 runs);
  two rounds over all candidates, the best batch of each kept, so a moment of load
  from something else on the machine does not decide (the second round only when the
  first took under 2 s: a slow model's longer batches are steadier anyway). About 2 s
  in all. The search stops early once two counts in a row are no faster than the best
  so far.
- The choice: the fewest threads within 5 % of the fastest. Fewer threads leave cores
  to decoding, tracking and the web server, which the bare measurement does not see.
- A model that runs on an accelerator (Edge TPU, CUDA) gets 1 thread: the CPU only
  feeds it.
- Other processes busy on the same cores skew the measurement (a second thread looks
  useless when the second core is taken). /proc/stat tells how much CPU others used on
  our cores meanwhile; above a quarter of a core the choice is used but not cached, and
  the log line (a warning then) says so.

The result is kept in <cache dir>/detect-threads.json (the pipeline passes its data
directory) under a key made of the backend and its runtime version, the model file's
path, size and modification time, the usable core count and the CPU architecture; a
change to any of them measures again. Within one process the result is also kept in
memory, so loading the same model again costs nothing. One log line says what was
chosen and why:

    detect.threads auto: 2 (measured 1: 30.0 fps, 2: 58.0 fps on 2 usable cores in 1.8 s)
    detect.threads auto: 2 (cached in data/detect-threads.json: measured 1: 30.0 fps, ...)

`appliance detect IMAGE...` does not measure (a few images do not repay 2 s): it takes
what the data directory's cache holds for the model, else every usable core.

The fps figures are the runtime's inference alone (no resize, no decoding of outputs),
so they are higher than `scripts/bench pipeline`'s bare detector figures. That bench
prints the bare detector at every thread count beside what auto chose.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from appliance.detect import preprocess
from appliance.detect.manifest import ModelManifest, show_path

log = logging.getLogger(__name__)

CACHE_FILE = "detect-threads.json"
TOLERANCE = 0.05  # fewer threads win when within this share of the fastest
ROUNDS = 2  # passes over the candidates; the best of each is kept
BUDGET_S = 2.0  # timed inference in all (warm-ups and loading come on top)
MIN_RUNS = 3  # timed inferences per batch, however slow the model
CONTENDED_CORES = 0.25  # others' CPU use on our cores while measuring above which it is not cached
_MAX_ENTRIES = 16  # cache entries kept (one per model, backend and machine shape)
_CACHE_VERSION = 1

# Runtime packages whose version goes into the cache key, by backend.
_RUNTIME_PACKAGES = {
    "litert": ("ai-edge-litert", "tflite-runtime"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt",),
}

FpsOf = Callable[[int], float]  # thread count -> inferences per second

# key -> (threads, fps by thread count, where it came from); see auto_threads().
_memo: dict[str, tuple[int, dict[int, float], str]] = {}


class OnAccelerator(Exception):
    """Raised by a timing function when the model turned out not to run on the CPU."""

    def __init__(self, device: str):
        super().__init__(device)
        self.device = device


def usable_cores() -> int:
    """The CPUs this process may run on (taskset, cgroup cpusets), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def candidates(cores: int) -> list[int]:
    """Thread counts worth trying on `cores` usable cores, fewest first."""
    if cores <= 8:
        return list(range(1, cores + 1))
    picks = [n for n in (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64) if n < cores]
    return picks + [cores]


def choose(fps: dict[int, float], tolerance: float = TOLERANCE) -> int:
    """The fewest threads whose fps is within `tolerance` of the fastest."""
    if not fps:
        raise ValueError("no measurements to choose from")
    best = max(fps.values())
    return min(n for n, f in fps.items() if f >= best * (1.0 - tolerance))


def measure(counts: Iterable[int], fps_of: FpsOf, rounds: int = ROUNDS,
            tolerance: float = TOLERANCE, budget_s: float | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[int, float]:
    """fps by thread count, the best of up to `rounds` calls of fps_of(n) for each.

    The first round stops early once two counts in a row are no faster than the best
    before them (beyond `tolerance`): more threads than that only wait on each other.
    Later rounds go over the counts the first one tried, in the same order, and are
    skipped once `budget_s` has gone by (a slow model: its long batches are steadier).
    """
    counts = list(counts)
    t0 = clock()
    fps: dict[int, float] = {}
    best, worse_in_a_row = 0.0, 0
    for n in counts:
        fps[n] = float(fps_of(n))
        if fps[n] > best * (1.0 + tolerance):
            best, worse_in_a_row = fps[n], 0
        else:
            best = max(best, fps[n])
            worse_in_a_row += 1
            if worse_in_a_row >= 2:
                break
    tried = list(fps)
    for _ in range(rounds - 1):
        if budget_s is not None and clock() - t0 >= budget_s:
            break
        for n in tried:
            fps[n] = max(fps[n], float(fps_of(n)))
    return fps


def describe(fps: dict[int, float], cores: int) -> str:
    shown = ", ".join(f"{n}: {f:.1f} fps" for n, f in sorted(fps.items()))
    return f"measured {shown} on {cores} usable core{'s' if cores != 1 else ''}"


def cpu_sample() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds spent on our usable cores by anyone, CPU seconds of this
    process) now, from /proc/stat and os.times(); None where /proc/stat is missing."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        hz = os.sysconf("SC_CLK_TCK")
        cpus = os.sched_getaffinity(0)
    except (OSError, ValueError, AttributeError):
        return None
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in rest.split()]
            # user nice system idle iowait irq softirq steal ...: all but idle and iowait
            busy += sum(v[:3]) + sum(v[5:8])
    t = os.times()
    return time.monotonic(), busy / hz, t.user + t.system


def other_load(before: tuple[float, float, float] | None,
               after: tuple[float, float, float] | None) -> float:
    """Cores' worth of CPU that other processes used on our cores between two samples."""
    if before is None or after is None or after[0] - before[0] < 0.2:
        return 0.0
    wall = after[0] - before[0]
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / wall)


def _backend_name(manifest: ModelManifest, backend: str) -> str:
    from appliance.detect.backends import FORMAT_BACKEND

    return FORMAT_BACKEND.get(manifest.format, manifest.format) if backend == "auto" else backend


def _runtime_version(backend: str) -> str:
    for package in _RUNTIME_PACKAGES.get(backend, ()):
        try:
            return f"{package}=={importlib_metadata.version(package)}"
        except importlib_metadata.PackageNotFoundError:
            continue
    return "unknown"


def cache_key(manifest: ModelManifest, backend: str, cores: int) -> str:
    """What a measurement depends on: runtime, model file, usable cores, CPU architecture."""
    name = _backend_name(manifest, backend)
    try:
        st = manifest.file.stat()
        file_part = f"{manifest.file.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        file_part = f"{manifest.file}:missing"
    return f"{name} {_runtime_version(name)}|{file_part}|cores={cores}|{platform.machine()}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("detect.threads auto: ignoring unreadable %s (%s)", show_path(path), e)
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION \
            or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _cached(path: Path, key: str) -> tuple[int, dict[int, float]] | None:
    entry = _read_cache(path).get(key)
    try:
        threads = int(entry["threads"])
        fps = {int(n): float(f) for n, f in entry["fps"].items()}
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return (threads, fps) if threads >= 1 else None


def _write_cache(path: Path, key: str, threads: int, fps: dict[int, float]) -> None:
    entries = _read_cache(path)
    entries.pop(key, None)
    entries[key] = {"threads": threads, "fps": {str(n): round(f, 2) for n, f in sorted(fps.items())},
                    "measured_at": round(time.time(), 3)}
    while len(entries) > _MAX_ENTRIES:  # oldest first (dicts keep insertion order)
        entries.pop(next(iter(entries)))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": entries}, indent=1))
        tmp.replace(path)
    except OSError as e:
        log.warning("detect.threads auto: cannot write %s (%s); will measure again next start",
                    show_path(path), e)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _probe_input(manifest: ModelManifest, batch: int) -> np.ndarray:
    # Seeded noise at the model's input size: the convolutions cost the same whatever the
    # picture, and noise is what the detector's own load check feeds too.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (manifest.input.height, manifest.input.width, 3), np.uint8)
              for _ in range(batch)]
    return preprocess.prepare(frames, manifest.input)[0]


@contextlib.contextmanager
def _quiet_backend_logs():
    logger = logging.getLogger("appliance.detect.backends")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def backend_timer(manifest: ModelManifest, backend: str = "auto", batch_s: float = 0.4) -> FpsOf:
    """fps_of(n): open the backend with n threads, warm it up, time inferences for batch_s.

    Raises OnAccelerator when the model does not run on the CPU, and whatever the backend
    raises when it cannot load the model (the same ApplianceError loading would give).
    """
    from appliance.detect.backends import open_backend

    inputs: dict[int, np.ndarray] = {}

    def fps_of(n: int) -> float:
        with _quiet_backend_logs():  # loading once per count, rounds included: log it once, later
            be = open_backend(manifest, backend, n)
        try:
            if be.device != "cpu":
                raise OnAccelerator(be.device)
            size = (be.max_batch or 1) if be.fixed_batch else 1
            x = inputs.get(size)
            if x is None:
                x = inputs[size] = _probe_input(manifest, size)
            be.run(x)  # warm-up: XNNPACK packs its weights on the first run
            runs, t0 = 0, time.perf_counter()
            while True:
                be.run(x)
                runs += 1
                elapsed = time.perf_counter() - t0
                if runs >= MIN_RUNS and elapsed >= batch_s:
                    return runs * size / elapsed
        finally:
            del be

    return fps_of


def auto_threads(manifest: ModelManifest, backend: str = "auto", cache_dir: Path | None = None,
                 *, measure_now: bool = True, fps_of: FpsOf | None = None,
                 cores: int | None = None) -> int:
    """The inference thread count for `detect.threads: auto` (see the module docstring).

    cache_dir: where detect-threads.json lives (the data directory); None: no file.
    measure_now: False gives the cached (or remembered) choice, else all usable cores,
    without measuring (for a one-off `appliance detect`).
    fps_of, cores: the timing function and core count, for tests.
    """
    from appliance.detect.backends import choose as choose_backend

    if choose_backend(manifest.format, backend)[0] == "tensorrt":
        log.info("detect.threads auto: 1 (TensorRT runs the model on the GPU; the CPU only feeds it)")
        return 1
    cores = usable_cores() if cores is None else cores
    key = cache_key(manifest, backend, cores)
    path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    if key in _memo:
        threads, fps, where = _memo[key]
        log.info("detect.threads auto: %d (%s: %s)", threads, where, describe(fps, cores))
        if path is not None and measure_now and _cached(path, key) is None:
            _write_cache(path, key, threads, fps)
        return threads
    if cores == 1:
        log.info("detect.threads auto: 1 (1 usable core)")
        return 1
    if path is not None:
        hit = _cached(path, key)
        if hit is not None:
            threads, fps = hit
            threads = min(threads, cores)
            _memo[key] = (threads, fps, f"earlier in this process, from {show_path(path)}")
            log.info("detect.threads auto: %d (cached in %s: %s)", threads, show_path(path),
                     describe(fps, cores))
            return threads
    if not measure_now:
        where = f"no measurement cached in {show_path(path)}" if path else "not measured"
        log.info("detect.threads auto: %d (%s; all %d usable cores)", cores, where, cores)
        return cores
    counts = candidates(cores)
    if fps_of is None:
        per_batch = BUDGET_S / (ROUNDS * len(counts))
        fps_of = backend_timer(manifest, backend, batch_s=min(0.4, max(0.1, per_batch)))
    t0, before = time.perf_counter(), cpu_sample()
    try:
        fps = measure(counts, fps_of, budget_s=BUDGET_S)
    except OnAccelerator as e:
        log.info("detect.threads auto: 1 (the model runs on %s; the CPU only feeds it)", e.device)
        return 1
    busy = other_load(before, cpu_sample())
    threads = choose(fps)
    _memo[key] = (threads, fps, "earlier in this process")
    best = max(fps, key=lambda n: fps[n])
    why = f"; {threads} within {TOLERANCE:.0%} of the fastest ({best})" if threads != best else ""
    contended = busy > CONTENDED_CORES
    if contended:
        why += (f"; other processes kept {busy:.1f} core(s) busy meanwhile, so this is not "
                "kept: measured again next start")
    log.log(logging.WARNING if contended else logging.INFO, "detect.threads auto: %d (%s in %.1f s%s)",
            threads, describe(fps, cores), time.perf_counter() - t0, why)
    if path is not None and not contended:
        _write_cache(path, key, threads, fps)
    return threads


def remembered(manifest: ModelManifest, backend: str = "auto",
               cores: int | None = None) -> tuple[int, dict[int, float]] | None:
    """The choice auto_threads made (or read) for this model in this process, and the fps
    behind it; None if it has not run. For benchmarks and status reports."""
    hit = _memo.get(cache_key(manifest, backend, usable_cores() if cores is None else cores))
    return (hit[0], dict(hit[1])) if hit else None


def forget() -> None:
    """Drop the choices remembered in this process (tests; a machine whose cores changed)."""
    _memo.clear()
