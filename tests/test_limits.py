"""limits: the per-user sliding window and the per-chat / total job guards."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.limits import JobGuard, RateLimiter
from classifier import errors


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides() -> None:
    clock = Clock()
    rate = RateLimiter(3, clock=clock)
    for _ in range(3):
        assert rate.hit("ada") == 0.0
        clock.now += 1                                      # hits at 1000, 1001, 1002
    clock.now = 1012
    assert rate.hit("ada") == pytest.approx(48.0)          # the first hit leaves the window at 1060
    assert rate.hit("bob") == 0.0                           # per key
    clock.now = 1060
    assert rate.hit("ada") == 0.0
    assert rate.hit("ada") == pytest.approx(1.0)            # the hit at 1001 is still in the window


def test_check_tells_once_then_stays_quiet_until_the_wait_is_over() -> None:
    clock = Clock()
    rate = RateLimiter(2, clock=clock)
    assert rate.check(1) and rate.check(1)
    with pytest.raises(errors.Busy) as info:
        rate.check(1)
    assert info.value.code == "busy" and info.value.retry_after_s == pytest.approx(60.0)
    assert info.value.user_message == "Slow down a little: I listen 2 times a minute for each person."
    clock.now += 30
    assert rate.check(1) is False                           # told already: no second "slow down"
    clock.now += 31
    assert rate.check(1) is True
    assert rate.check(1) is True
    with pytest.raises(errors.Busy):                        # a new wait: told again
        rate.check(1)


def test_no_limit() -> None:
    rate = RateLimiter(0)
    assert all(rate.check("x") for _ in range(1000))


def test_idle_users_are_forgotten() -> None:
    clock = Clock()
    rate = RateLimiter(1, clock=clock)
    for user in range(2000):
        rate.hit(user)
    clock.now += 61
    for user in range(2000, 3100):
        rate.hit(user)
    assert len(rate._hits) < 2000


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=60), st.integers(1, 6))
def test_never_more_than_n_in_any_window(gaps: list[float], n: int) -> None:
    clock = Clock()
    rate = RateLimiter(n, window_s=10.0, clock=clock)
    accepted = []
    for gap in gaps:
        clock.now += gap
        wait = rate.hit("k")
        if wait == 0.0:
            accepted.append(clock.now)
        else:
            assert 0.0 < wait <= 10.0 + 1e-9
    for t in accepted:
        assert sum(1 for u in accepted if t <= u < t + 10.0) <= n


async def test_jobs_per_chat_and_in_total() -> None:
    clock = Clock()
    guard = JobGuard(per_chat=2, total=3, typical_job_s=20.0, clock=clock)
    async with guard.job("a"), guard.job("a"):
        assert guard.running("a") == 2 and guard.running() == 2
        clock.now += 5
        with pytest.raises(errors.Busy) as chat:
            async with guard.job("a"):
                pass
        assert chat.value.retry_after_s == pytest.approx(15.0)
        assert chat.value.user_message.startswith("I'm already listening to 2 clips from this chat.")
        async with guard.job("b"):
            with pytest.raises(errors.Busy) as total:
                async with guard.job("c"):
                    pass
            assert total.value.user_message == "I'm listening to a lot of music right now."
    assert guard.running() == 0


async def test_a_failed_job_frees_its_slot_and_durations_tune_the_estimate() -> None:
    clock = Clock()
    guard = JobGuard(per_chat=1, total=10, typical_job_s=10.0, clock=clock)
    with pytest.raises(ValueError):
        async with guard.job("a"):
            clock.now += 60
            raise ValueError("boom")
    assert guard.running("a") == 0
    async with guard.job("a"):
        with pytest.raises(errors.Busy) as info:
            async with guard.job("a"):
                pass
    assert info.value.retry_after_s == pytest.approx(0.8 * 10 + 0.2 * 60)


async def test_concurrent_tasks_respect_the_total() -> None:
    guard = JobGuard(per_chat=0, total=2)
    running, peak, refused = 0, 0, 0

    async def job(chat: int) -> None:
        nonlocal running, peak, refused
        try:
            async with guard.job(chat):
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1
        except errors.Busy:
            refused += 1

    await asyncio.gather(*(job(i) for i in range(6)))
    assert peak == 2 and refused == 4
