from __future__ import annotations

import random
import statistics

from appliance.uplink.pacing import TokenBucket, backoff_delay


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half():
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 16.0), (7, 60.0), (50, 60.0), (10_000, 60.0)]:
        assert backoff_delay(attempt, 0.5, 60.0, rand=lambda: 0.0) == ceiling / 2
        assert backoff_delay(attempt, 0.5, 60.0, rand=lambda: 1.0) == ceiling


def test_backoff_spreads_a_fleet_out():
    rng = random.Random(1)
    delays = [backoff_delay(8, 0.5, 60.0, rand=rng.random) for _ in range(1000)]
    assert 30.0 <= min(delays) and max(delays) <= 60.0
    assert statistics.pstdev(delays) > 5.0  # not all at the same moment


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_a_second_of_burst_then_paces():
    clock = Clock()
    b = TokenBucket(1000, clock=clock)
    assert b.wait_s() == 0.0
    b.spend(1500)  # larger than a second's allowance: goes out, leaves a debt
    assert b.wait_s() == 0.5
    clock.t += 0.5
    assert b.wait_s() == 0.0


def test_bucket_long_run_rate_is_the_cap():
    clock = Clock()
    b = TokenBucket(10_000, clock=clock)
    sent = 0
    while clock.t < 110.0:  # ten seconds, sending whenever allowed
        wait = b.wait_s()
        if wait:
            clock.t += wait
            continue
        b.spend(700)
        sent += 700
    assert 10 * 10_000 <= sent <= 11 * 10_000 + 700


def test_no_cap():
    b = TokenBucket(0)
    b.spend(10**9)
    assert b.wait_s() == 0.0
