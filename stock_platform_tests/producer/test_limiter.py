from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stock_platform.producer.limiter import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(
    rate=st.floats(min_value=0.1, max_value=50),
    capacity=st.integers(min_value=1, max_value=10),
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=2), st.integers(min_value=0, max_value=5)),
                   max_size=60),
)  # fmt: skip
def test_no_window_gets_more_than_capacity_plus_rate_times_its_length(rate, capacity, steps):
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    grants: list[float] = []
    for advance, attempts in steps:
        clock.now += advance
        grants.extend(clock.now for _ in range(attempts) if bucket.try_acquire() == 0.0)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            count = j - i + 1
            assert count <= capacity + rate * (grants[j] - start) + 1e-9


@given(rate=st.floats(min_value=0.1, max_value=50), capacity=st.integers(min_value=1, max_value=10))
def test_the_returned_wait_is_exactly_enough(rate, capacity):
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    for _ in range(capacity):
        assert bucket.try_acquire() == 0.0
    wait = bucket.try_acquire()
    assert wait == pytest.approx(1 / rate)
    clock.now += wait * 0.99
    assert bucket.try_acquire() > 0
    clock.now += wait * 0.011
    assert bucket.try_acquire() == 0.0


def test_a_full_bucket_grants_its_burst_then_paces_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    clock.now = 10.0  # idle time refills only up to capacity
    assert [bucket.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_acquire_sleeps_through_the_wait_function_and_reports_the_time():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=1, clock=clock)
    slept: list[float] = []

    def wait(seconds: float) -> bool:
        slept.append(seconds)
        clock.now += seconds
        return False

    assert bucket.acquire(wait=wait) == 0.0
    assert bucket.acquire(wait=wait) == pytest.approx(0.5)
    assert slept == [pytest.approx(0.5)]


def test_acquire_gives_up_when_the_wait_function_says_stop():
    bucket = TokenBucket(rate=1.0, capacity=1, clock=FakeClock())
    assert bucket.acquire() == 0.0
    assert bucket.acquire(wait=lambda seconds: True) is None
    assert bucket.try_acquire() == pytest.approx(1.0)  # nothing was taken by the abandoned call


@pytest.mark.parametrize(("rate", "capacity"), [(0, 1), (-1, 1), (1, 0.5)])
def test_invalid_budgets_are_refused(rate, capacity):
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity)
