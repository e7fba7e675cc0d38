"""detect.threads auto: the choice from measured fps (injected timings), the measurement's
early stop, the cache (hit, miss, invalidation). The real measurement with the default
model is in tests/integration/test_detect_threads.py."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.detect import threads


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch):
    threads.forget()
    # No reading of the machine's real load: the timings here are fake and instant.
    monkeypatch.setattr(threads, "cpu_sample", lambda: None)
    yield
    threads.forget()


def fake_manifest(tmp_path: Path, content: bytes = b"model v1"):
    """What auto_threads reads of a manifest: the model file and its format."""
    f = tmp_path / "model.tflite"
    if not f.exists():
        f.write_bytes(content)
    return SimpleNamespace(name="fake", file=f, format="tflite")


class FakeTimer:
    """fps_of(n) from a table; records the calls."""

    def __init__(self, table: dict[int, float]):
        self.table = table
        self.calls: list[int] = []

    def __call__(self, n: int) -> float:
        self.calls.append(n)
        return self.table[n]


# -- the choice --------------------------------------------------------------------------

@pytest.mark.parametrize("fps,expected", [
    ({1: 22.9, 2: 37.9}, 2),                      # this machine: the second core pays
    ({1: 30.0, 2: 30.0}, 1),                      # a tie: fewer threads
    ({1: 30.0, 2: 31.0}, 1),                      # within 5 %: fewer threads
    ({1: 30.0, 2: 32.0}, 2),                      # beyond 5 %
    ({1: 10.0, 2: 18.0, 3: 25.0, 4: 25.5}, 3),    # the 4th thread adds 2 %
    ({1: 10.0, 2: 18.0, 3: 25.0, 4: 21.0}, 3),    # the 4th thread hurts
    ({1: 20.0, 2: 15.0}, 1),                      # a second thread hurts
    ({4: 8.0}, 4),
])
def test_choose(fps, expected):
    assert threads.choose(fps) == expected


def test_choose_tolerance():
    assert threads.choose({1: 30.0, 2: 31.0}, tolerance=0.0) == 2
    with pytest.raises(ValueError):
        threads.choose({})


def test_candidates():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [1, 2]
    assert threads.candidates(8) == list(range(1, 9))
    assert threads.candidates(12) == [1, 2, 3, 4, 5, 6, 7, 8, 12]
    assert threads.candidates(20) == [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20]


def test_measure_keeps_the_best_of_rounds():
    seq = {1: iter([20.0, 23.0]), 2: iter([30.0, 28.0])}
    fps = threads.measure([1, 2], lambda n: next(seq[n]), rounds=2)
    assert fps == {1: 23.0, 2: 30.0}


def test_measure_stops_when_more_threads_stop_helping():
    timer = FakeTimer({1: 10.0, 2: 19.0, 3: 19.5, 4: 18.0, 5: 30.0, 6: 30.0})
    fps = threads.measure([1, 2, 3, 4, 5, 6], timer, rounds=2)
    assert sorted(fps) == [1, 2, 3, 4]  # 3 and 4 no faster than 2: 5 and 6 never tried
    assert timer.calls == [1, 2, 3, 4, 1, 2, 3, 4]
    assert threads.choose(fps) == 2


# -- auto_threads: measuring, the log line, the cache ---------------------------------------

def test_auto_measures_chooses_and_logs(tmp_path, caplog):
    m = fake_manifest(tmp_path)
    timer = FakeTimer({1: 22.9, 2: 37.9})
    with caplog.at_level(logging.INFO, logger="appliance.detect.threads"):
        assert threads.auto_threads(m, fps_of=timer, cores=2) == 2
    assert set(timer.calls) == {1, 2}
    line = next(r.getMessage() for r in caplog.records if "detect.threads auto" in r.getMessage())
    assert line.startswith("detect.threads auto: 2 (measured 1: 22.9 fps, 2: 37.9 fps on 2 usable cores in ")


def test_auto_tie_prefers_fewer_threads(tmp_path):
    m = fake_manifest(tmp_path)
    assert threads.auto_threads(m, fps_of=FakeTimer({1: 30.0, 2: 30.5, 3: 30.2}), cores=3) == 1


def test_auto_one_core_does_not_measure(tmp_path):
    timer = FakeTimer({})
    assert threads.auto_threads(fake_manifest(tmp_path), fps_of=timer, cores=1) == 1
    assert timer.calls == []


def test_auto_on_an_accelerator_takes_one_thread(tmp_path):
    def on_tpu(n):
        raise threads.OnAccelerator("edgetpu")

    cache = tmp_path / "data"
    assert threads.auto_threads(fake_manifest(tmp_path), cache_dir=cache, fps_of=on_tpu, cores=4) == 1
    assert not (cache / threads.CACHE_FILE).exists()  # a Coral may be unplugged: not kept


def test_cache_hit_skips_measuring(tmp_path, caplog):
    m = fake_manifest(tmp_path)
    cache = tmp_path / "data"
    assert threads.auto_threads(m, cache_dir=cache, fps_of=FakeTimer({1: 22.9, 2: 37.9}), cores=2) == 2
    saved = json.loads((cache / threads.CACHE_FILE).read_text())
    [entry] = saved["entries"].values()
    assert entry["threads"] == 2 and entry["fps"] == {"1": 22.9, "2": 37.9}

    threads.forget()  # a restart
    timer = FakeTimer({1: 50.0, 2: 10.0})
    with caplog.at_level(logging.INFO, logger="appliance.detect.threads"):
        assert threads.auto_threads(m, cache_dir=cache, fps_of=timer, cores=2) == 2
    assert timer.calls == []
    assert any("(cached in" in r.getMessage() and "2: 37.9 fps" in r.getMessage()
               for r in caplog.records)


def test_no_cache_dir_writes_nothing_and_measures_after_restart(tmp_path):
    m = fake_manifest(tmp_path)
    threads.auto_threads(m, fps_of=FakeTimer({1: 22.9, 2: 37.9}), cores=2)
    threads.forget()
    timer = FakeTimer({1: 22.9, 2: 37.9})
    threads.auto_threads(m, fps_of=timer, cores=2)
    assert timer.calls
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_same_process_remembers(tmp_path):
    m = fake_manifest(tmp_path)
    threads.auto_threads(m, fps_of=FakeTimer({1: 22.9, 2: 37.9}), cores=2)
    timer = FakeTimer({1: 50.0, 2: 10.0})
    assert threads.auto_threads(m, fps_of=timer, cores=2) == 2
    assert timer.calls == []


@pytest.mark.parametrize("change", ["content", "mtime", "cores", "backend_version"])
def test_cache_invalidated(tmp_path, monkeypatch, change):
    m = fake_manifest(tmp_path)
    cache = tmp_path / "data"
    assert threads.auto_threads(m, cache_dir=cache, fps_of=FakeTimer({1: 22.9, 2: 37.9}), cores=2) == 2
    threads.forget()
    cores = 2
    if change == "content":  # a new model file (appliance fetch of another version)
        m.file.write_bytes(b"model v2, longer")
    elif change == "mtime":
        st = m.file.stat()
        os.utime(m.file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "cores":  # taskset, cgroup cpuset, another board
        cores = 3
    else:
        monkeypatch.setattr(threads, "_runtime_version", lambda backend: "ai-edge-litert==99")
    timer = FakeTimer({1: 40.0, 2: 20.0, 3: 20.0})
    assert threads.auto_threads(m, cache_dir=cache, fps_of=timer, cores=cores) == 1
    assert timer.calls
    saved = json.loads((cache / threads.CACHE_FILE).read_text())
    assert sorted(e["threads"] for e in saved["entries"].values()) == [1, 2]  # both kept


def test_other_model_has_its_own_entry(tmp_path):
    cache = tmp_path / "data"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fake_manifest(tmp_path / "a")
    b = fake_manifest(tmp_path / "b", b"other")
    assert threads.auto_threads(a, cache_dir=cache, fps_of=FakeTimer({1: 10.0, 2: 20.0}), cores=2) == 2
    assert threads.auto_threads(b, cache_dir=cache, fps_of=FakeTimer({1: 10.0, 2: 10.0}), cores=2) == 1
    threads.forget()
    nothing = FakeTimer({})
    assert threads.auto_threads(a, cache_dir=cache, fps_of=nothing, cores=2) == 2
    assert threads.auto_threads(b, cache_dir=cache, fps_of=nothing, cores=2) == 1
    assert nothing.calls == []


@pytest.mark.parametrize("junk", ["not json", '{"version": 1, "entries": []}', '{"version": 0}',
                                  '{"version": 1, "entries": {"KEY": {"threads": "x"}}}'])
def test_unreadable_cache_measures_and_rewrites(tmp_path, junk):
    m = fake_manifest(tmp_path)
    cache = tmp_path / "data"
    cache.mkdir()
    key = threads.cache_key(m, "auto", 2)
    (cache / threads.CACHE_FILE).write_text(junk.replace("KEY", key))
    timer = FakeTimer({1: 22.9, 2: 37.9})
    assert threads.auto_threads(m, cache_dir=cache, fps_of=timer, cores=2) == 2
    assert timer.calls
    assert json.loads((cache / threads.CACHE_FILE).read_text())["entries"][key]["threads"] == 2


def test_unwritable_cache_dir_still_chooses(tmp_path, caplog):
    m = fake_manifest(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="appliance.detect.threads"):
        assert threads.auto_threads(m, cache_dir=blocker / "data", fps_of=FakeTimer({1: 1.0, 2: 2.0}),
                                    cores=2) == 2
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_without_measuring(tmp_path):
    """`appliance detect`: the cached choice, else all usable cores; never measures."""
    m = fake_manifest(tmp_path)
    cache = tmp_path / "data"
    never = FakeTimer({})
    assert threads.auto_threads(m, cache_dir=cache, fps_of=never, cores=4, measure_now=False) == 4
    threads.auto_threads(m, cache_dir=cache, fps_of=FakeTimer({1: 9.0, 2: 10.0, 3: 10.0, 4: 10.0}),
                         cores=4)
    threads.forget()
    assert threads.auto_threads(m, cache_dir=cache, fps_of=never, cores=4, measure_now=False) == 2
    assert never.calls == []


def test_usable_cores_respects_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert threads.usable_cores() == 2


def test_remembered(tmp_path):
    m = fake_manifest(tmp_path)
    assert threads.remembered(m, cores=2) is None
    threads.auto_threads(m, fps_of=FakeTimer({1: 22.9, 2: 37.9}), cores=2)
    assert threads.remembered(m, cores=2) == (2, {1: 22.9, 2: 37.9})


def test_measure_skips_the_second_round_past_the_budget():
    now = [0.0]

    def slow(n):
        now[0] += 1.5  # each count takes 1.5 s to measure
        return {1: 10.0, 2: 19.0}[n]

    assert threads.measure([1, 2], slow, rounds=2, budget_s=2.0, clock=lambda: now[0]) == {1: 10.0, 2: 19.0}
    assert now[0] == 3.0  # round 1 only


def test_contended_measurement_is_used_but_not_cached(tmp_path, monkeypatch, caplog):
    samples = iter([(100.0, 50.0, 10.0), (102.0, 55.0, 12.0)])  # 5 s busy, 2 s ours, over 2 s
    monkeypatch.setattr(threads, "cpu_sample", lambda: next(samples))
    m = fake_manifest(tmp_path)
    cache = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="appliance.detect.threads"):
        assert threads.auto_threads(m, cache_dir=cache, fps_of=FakeTimer({1: 25.0, 2: 26.0}), cores=2) == 1
    assert not (cache / threads.CACHE_FILE).exists()
    [rec] = [r for r in caplog.records if "detect.threads auto" in r.getMessage()]
    assert rec.levelno == logging.WARNING and "1.5 core(s) busy" in rec.getMessage()


def test_other_load():
    assert threads.other_load((0.0, 10.0, 1.0), (1.0, 11.0, 2.0)) == 0.0  # all of it ours
    assert threads.other_load((0.0, 10.0, 1.0), (2.0, 13.0, 2.0)) == 1.0
    assert threads.other_load(None, (2.0, 13.0, 2.0)) == 0.0
    assert threads.other_load((0.0, 10.0, 1.0), (0.1, 13.0, 2.0)) == 0.0  # too short to tell
