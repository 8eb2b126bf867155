"""In-process bus: critical topics synchronous and lossless, slow observers bounded and never blocking."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from bastion.engine.bus import MessageBus, is_critical


def test_default_is_synchronous_in_subscription_order() -> None:
    bus = MessageBus()
    got: list[str] = []
    bus.subscribe("metrics.pnl", lambda m: got.append(f"a:{m}"))
    bus.subscribe("metrics.*", lambda m: got.append(f"b:{m}"))
    bus.publish("metrics.pnl", 1)
    assert got == ["a:1", "b:1"]
    assert bus.published == 1


@pytest.mark.parametrize(
    ("topic", "critical"),
    [
        ("risk.breaker", True),
        ("order.OrderFilled", True),
        ("fill.BTCUSDT", True),
        ("portfolio.funding", True),
        ("system.critical", True),
        ("system.critical.disk", True),
        ("system.info", False),
        ("metrics.latency", False),
        ("ui.book", False),
        ("orders_view", False),
    ],
)
def test_critical_topics(topic: str, critical: bool) -> None:
    assert is_critical(topic) is critical


@pytest.mark.parametrize(
    "pattern",
    ["risk.breaker", "risk.*", "order.*", "fill.x", "portfolio.*", "system.critical", "system.*", "*", "or*"],
)
def test_a_queue_on_anything_that_can_carry_critical_messages_is_refused(pattern: str) -> None:
    bus = MessageBus()
    with pytest.raises(ValueError, match="critical"):
        bus.subscribe(pattern, lambda m: None, queue=10)
    bus.subscribe(pattern, lambda m: None)  # synchronous is fine


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_queue_size_must_be_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError):
        MessageBus().subscribe("metrics.x", lambda m: None, queue=bad)


def test_queued_subscriber_gets_messages_on_drain_in_order() -> None:
    bus = MessageBus()
    got: list[Any] = []
    bus.subscribe("ui.*", got.append, queue=10)
    for i in range(5):
        bus.publish("ui.book", i)
    assert got == [] and bus.pending() == 5
    assert bus.drain(max_messages=2) == 2 and got == [0, 1]
    assert bus.drain() == 3 and got == [0, 1, 2, 3, 4]
    assert bus.pending() == 0 and bus.drain() == 0


def test_overflow_drops_oldest_counts_and_logs_without_blocking() -> None:
    bus = MessageBus()
    got: list[int] = []
    bus.subscribe("metrics.tick", got.append, queue=3)
    with capture_logs() as logs:
        for i in range(1000):
            bus.publish("metrics.tick", i)
    assert bus.stats()["metrics.tick"] == {"published": 1000, "dropped": 997}
    overflow = [e for e in logs if e["event"] == "bus.queue_overflow"]
    assert [e["dropped"] for e in overflow] == [1, 10, 100]  # logged, but not once per message
    bus.drain()
    assert got == [997, 998, 999]  # the newest survive


def test_critical_topics_stay_synchronous_when_queues_exist() -> None:
    bus = MessageBus()
    fills: list[Any] = []
    ui: list[Any] = []
    bus.subscribe("fill.*", fills.append)
    bus.subscribe("ui.*", ui.append, queue=1)
    for i in range(100):
        bus.publish("fill.BTCUSDT", i)
        bus.publish("ui.x", i)
    assert fills == list(range(100))  # every one, at once
    st = bus.stats()
    assert st["fill.BTCUSDT"] == {"published": 100, "dropped": 0}
    assert st["ui.x"]["dropped"] == 99


def test_a_failing_handler_does_not_stop_the_others_and_still_raises() -> None:
    bus = MessageBus()
    got: list[str] = []

    def boom(m: Any) -> None:
        raise RuntimeError("metrics hook bug")

    bus.subscribe("order.filled", boom)
    bus.subscribe("order.filled", lambda m: got.append("ledger"))
    bus.subscribe("order.*", lambda m: got.append("risk"))
    with pytest.raises(RuntimeError, match="metrics hook bug"):
        bus.publish("order.filled", 1)
    assert got == ["ledger", "risk"]

    bus.subscribe("order.*", boom)
    with pytest.raises(ExceptionGroup) as ei:
        bus.publish("order.filled", 2)
    assert len(ei.value.exceptions) == 2


def test_a_failing_queued_handler_is_logged_and_the_queue_moves_on() -> None:
    bus = MessageBus()
    got: list[int] = []

    def flaky(m: int) -> None:
        if m == 1:
            raise ValueError("bad")
        got.append(m)

    bus.subscribe("ui.x", flaky, queue=10)
    for i in range(3):
        bus.publish("ui.x", i)
    with capture_logs() as logs:
        assert bus.drain() == 3
    assert got == [0, 2]
    assert any(e["event"] == "bus.queued_handler_failed" for e in logs)


def test_concurrent_publishers_account_for_every_message() -> None:
    bus = MessageBus()
    got: list[int] = []
    bus.subscribe("metrics.*", got.append, queue=50)

    def publisher(t: int) -> None:
        for i in range(2000):
            bus.publish(f"metrics.t{t}", i)

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    drained = 0
    while any(t.is_alive() for t in threads):
        drained += bus.drain()
    for t in threads:
        t.join()
    drained += bus.drain()
    dropped = sum(s["dropped"] for s in bus.stats().values())
    assert drained == len(got)
    assert drained + dropped == 8000
