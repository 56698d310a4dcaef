"""Wake-ups of the load generator's paced users: order, deadlines and the timerfd alarm."""

from __future__ import annotations

import random
import select
import time

import pytest

from bench.adapters.base import Status
from bench.adapters.noop import NoopAdapter
from bench.measure.schedule import GeventAlarm, MonotonicTimer, Pacer, WakeQueue

linux_timer = pytest.mark.skipif(not MonotonicTimer.available(), reason="timerfd needs Linux")


def test_wake_queue_pops_due_waiters_earliest_first() -> None:
    q: WakeQueue[str] = WakeQueue()
    assert q.next_ns() is None
    assert q.push(300, "c")
    assert q.push(100, "a")
    assert not q.push(200, "b")
    assert not q.push(100, "a2")
    assert q.next_ns() == 100
    assert q.pop_due(99) == []
    # Equal deadlines keep their order of arrival.
    assert q.pop_due(200) == ["a", "a2", "b"]
    assert len(q) == 1 and q.next_ns() == 300
    assert q.pop_due(10**18) == ["c"]
    assert len(q) == 0


def test_wake_queue_push_reports_a_new_earliest_deadline_only() -> None:
    q: WakeQueue[int] = WakeQueue()
    rng = random.Random(5)
    pushed: list[tuple[int, int]] = []
    for i in range(500):
        when = rng.randrange(10_000)
        moved = q.push(when, i)
        assert moved == (not pushed or when < min(w for w, _ in pushed))
        pushed.append((when, i))
    assert q.pop_due(10_000) == [i for _w, i in sorted(pushed)]
    assert len(q) == 0


def test_wake_queue_replays_pacer_schedules_in_time_order() -> None:
    pacers = [Pacer(0.1, random.Random(i), start_ns=0) for i in range(20)]
    q: WakeQueue[int] = WakeQueue()
    for i, p in enumerate(pacers):
        q.push(p.next_intended(), i)
    woken: list[int] = []
    now = 0
    while now < 1_000_000_000:
        now = q.next_ns() or 0
        for i in q.pop_due(now):
            woken.append(now)
            q.push(pacers[i].next_intended(), i)
    assert woken == sorted(woken)
    # Twenty users at one send per 100 ms each: 200 wake-ups a second.
    assert 195 <= len(woken) <= 221


@linux_timer
def test_monotonic_timer_fires_only_once_due() -> None:
    timer = MonotonicTimer()
    try:
        assert not timer.consume()
        timer.arm(time.perf_counter_ns() - 1)
        assert select.select([timer], [], [], 1.0)[0]
        assert timer.consume()
        assert not timer.consume()
        timer.arm(time.perf_counter_ns() + 3600 * 10**9)
        assert select.select([timer], [], [], 0)[0] == []
        timer.arm(None)
        assert timer.armed_ns is None
        assert select.select([timer], [], [], 0)[0] == []
    finally:
        timer.close()


@linux_timer
def test_gevent_alarm_wakes_each_greenlet_at_or_after_its_deadline() -> None:
    gevent = pytest.importorskip("gevent")
    alarm = GeventAlarm()
    assert alarm.precise
    woke: list[tuple[int, int, int]] = []

    def user(i: int) -> None:
        pacer = Pacer(0.004, random.Random(i))
        for _ in range(10):
            due = pacer.next_intended()
            alarm.sleep_until(due)
            woke.append((i, due, time.perf_counter_ns()))

    try:
        gevent.joinall([gevent.spawn(user, i) for i in range(8)], timeout=30, raise_error=True)
    finally:
        alarm.close()
    assert len(woke) == 80
    assert all(now >= due for _i, due, now in woke)
    assert alarm.wakeups <= 80
    # Each user's sends keep their schedule's order.
    for i in range(8):
        dues = [due for j, due, _now in woke if j == i]
        assert dues == sorted(dues)


def test_gevent_alarm_without_timerfd_falls_back_to_sleep() -> None:
    pytest.importorskip("gevent")
    alarm = GeventAlarm(use_timerfd=False)
    assert not alarm.precise
    alarm.sleep_until(time.perf_counter_ns() + 2_000_000)
    assert len(alarm.queue) == 0
    alarm.close()


@linux_timer
def test_gevent_alarm_returns_at_once_for_a_past_deadline() -> None:
    pytest.importorskip("gevent")
    alarm = GeventAlarm()
    try:
        alarm.sleep_until(time.perf_counter_ns() - 1)
        assert len(alarm.queue) == 0 and alarm.wakeups == 0
    finally:
        alarm.close()


def test_noop_delay_waits_on_the_generators_alarm_when_given_one() -> None:
    adapter = NoopAdapter.from_url("noop://?delay_ms=2.5")
    deadlines: list[int] = []
    adapter.sleep_until = deadlines.append
    before = time.perf_counter_ns()
    assert adapter.get_customer(1) is Status.ok
    after = time.perf_counter_ns()
    [deadline] = deadlines
    assert before + 2_500_000 <= deadline <= after + 2_500_000
    zero = NoopAdapter.from_url("noop://?delay_ms=0")
    zero.sleep_until = deadlines.append
    assert zero.get_customer(1) is Status.ok
    assert len(deadlines) == 1
