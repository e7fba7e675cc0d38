"""Model switch: a version activated on the running pipeline against stopping it to change
the model, on vtest.avi in fast mode (every frame), in one process.

switch:   `appliance run --fast` with the default config (adaptive stride off, so no frame
          is skipped on purpose); after --switch-at frames, ModelManager.activate() of
          version "2" of the shipped model (installed from the same file), from another
          thread as the uplink does it. Reported: frames lost (read minus detected, skipped
          and failed: target 0), the time from the command to the first frame detected
          by the new model, of which load + self-check, and the detect fps before the
          command, while the candidate loads and is checked beside it, and after.
restart:  what stopping to change the model costs instead: a new Pipeline (model loaded)
          to its first detected frame, in this process (a lower bound), and a whole
          `appliance run --max-frames 1` process from start to exit; frames a 10 fps
          camera would lose meanwhile.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from appliance.config import Config
from appliance.modelstore import ModelStore
from appliance.pipeline import Pipeline
from tests.bench.common import parser, setup

NAME = "ssd-mobilenet-v2-coco"


def _cfg(base: Config) -> Config:
    cfg = base.model_copy(deep=True)
    cfg.adaptive.enabled = False
    return cfg


def switch_run(cfg: Config, assets: Path, frames: int, switch_at: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        ModelStore(data).install("ssd-mobilenet-v2", assets, version="2")
        p = Pipeline(_cfg(cfg), data, fast=True, max_frames=frames)
        stamps: list[tuple[float, str]] = []  # (when, version) per detected frame
        p.detect.observers.append(lambda r: stamps.append((time.perf_counter(), r.model["version"])))
        runner = threading.Thread(target=p.run, kwargs={"stats_interval_s": 3600})
        runner.start()
        det = p.detect.cameras["demo"]
        while det.detected < switch_at and runner.is_alive():
            time.sleep(0.01)
        t_cmd = time.perf_counter()
        out = p.models.activate(f"{NAME}@2")
        t_done = time.perf_counter()
        runner.join()
        cap = p.captures["demo"]
        first_new = next(t for t, v in stamps if v == "2")

        def fps(t0: float, t1: float) -> float:
            n = sum(1 for t, _ in stamps if t0 <= t < t1)
            return n / (t1 - t0) if t1 > t0 else 0.0
        before = [t for t, _ in stamps if t < t_cmd]
        after = [t for t, v in stamps if v == "2"]
        return {"read": cap.frames, "detected": det.detected,
                "lost": cap.frames - (det.detected + det.skipped + det.failed),
                "first_frame_s": first_new - t_cmd, "load_check_s": out["load_and_check_s"],
                "fps_before": fps(before[len(before) // 4], t_cmd),
                "fps_loading": fps(t_cmd, t_done), "fps_after": fps(after[0], after[-1])}


def restart_run(cfg: Config, frames: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = Pipeline(_cfg(cfg), Path(tmp), fast=True, max_frames=frames)
        first: list[float] = []
        p.detect.observers.append(lambda r: first or first.append(time.perf_counter()))
        p.run(stats_interval_s=3600)
        return first[0] - t0


def process_restart_s(threads) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text(f"detect: {{threads: {threads}}}\nweb: {{enabled: false}}\n")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "appliance", "run", "--fast", "--max-frames", "1",
                        "--config", str(cfg), "--data-dir", str(Path(tmp) / "d")], check=True,
                       capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = parser("scripts/bench model_switch", __doc__)
    ap.add_argument("--switch-at", type=int, default=100, help="frames detected before the switch (default 100)")
    args = ap.parse_args()
    args.frames = max(args.frames, args.switch_at + 150)
    cfg, assets, _ = setup(args)
    runs = [switch_run(cfg, assets, args.frames, args.switch_at) for _ in range(args.rounds)]
    restart = min(restart_run(cfg, 20) for _ in range(args.rounds))
    process = min(process_restart_s(cfg.detect.threads) for _ in range(args.rounds))
    print(f"model switch on vtest.avi, {args.frames} frames, switch after {args.switch_at}, "
          f"{args.rounds} round(s)")
    for i, r in enumerate(runs, 1):
        print(f"round {i}: read {r['read']}, detected {r['detected']}, frames lost {r['lost']}; "
              f"command -> first frame on the new model {r['first_frame_s']:.2f} s "
              f"(load + self-check {r['load_check_s']:.2f} s); detect fps before {r['fps_before']:.1f}, "
              f"while loading beside {r['fps_loading']:.1f}, after {r['fps_after']:.1f}")
    best = min(r["first_frame_s"] for r in runs)
    print(f"restart instead: new pipeline to its first detected frame {restart:.2f} s (in-process), "
          f"a whole process {process:.2f} s: ~{process * 10:.0f} frames of a 10 fps camera not seen")
    print(f"frames lost: switch {max(r['lost'] for r in runs)} (target 0), restart ~{process * 10:.0f}; "
          f"command-to-new-model {best:.2f} s = {best / process:.2f}x a process restart's blind gap")


if __name__ == "__main__":
    main()
