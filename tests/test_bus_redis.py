"""Redis Streams bus against the real Redis at 127.0.0.1:6379: nothing unacknowledged is lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.engine.bus_redis import RedisBusError, RedisStreamBus, StreamId
from bastion.model.fixed import Price, Quantity
from bastion.model.orders import Order, OrderType, Side

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def bus() -> Iterator[RedisStreamBus]:
    prefix = f"bastion-test-{uuid.uuid4().hex[:12]}"
    try:
        b = RedisStreamBus(URL, prefix=prefix)
    except RedisBusError as exc:
        pytest.fail(
            f"Redis is not reachable at 127.0.0.1:6379 ({exc}). Start it with: redis-server --daemonize yes"
        )
    yield b
    keys = list(b.redis.scan_iter(match=f"{prefix}:*"))
    if keys:
        b.redis.delete(*keys)
    b.close()


def _order(cid: str) -> Order:
    return Order(cid, "BTCUSDT", Side.SELL, OrderType.LIMIT, Quantity(1, 3), Price(6180030, 2))


def test_publish_read_ack_carries_model_objects_exactly(bus: RedisStreamBus) -> None:
    c = bus.consumer("gateway", "g1", ["order.submit", "risk.breaker"])
    bus.publish("order.submit", {"order": _order("c-1")})
    bus.publish("risk.breaker", "open")
    got = c.read(count=10)
    assert {(d.topic, str(d.message)) for d in got} == {
        ("order.submit", str({"order": _order("c-1")})),
        ("risk.breaker", "open"),
    }
    order_msg = next(d for d in got if d.topic == "order.submit")
    assert order_msg.message == {"order": _order("c-1")}
    assert c.pending() == 2
    assert c.ack(*(d.id for d in got)) == 2
    assert c.pending() == 0
    assert c.read(count=10) == []


def test_unacked_messages_are_redelivered_after_a_consumer_dies(bus: RedisStreamBus) -> None:
    a = bus.consumer("risk", "a", ["order.filled"], claim_idle_ms=50)
    for i in range(5):
        bus.publish("order.filled", i)
    got = a.read(count=5)
    assert [d.message for d in got] == [0, 1, 2, 3, 4]
    a.ack(got[0].id, got[1].id)
    del a  # "dies" holding 2, 3, 4

    b = bus.consumer("risk", "b", ["order.filled"], claim_idle_ms=50)
    assert b.read(count=10) == []  # not yet idle long enough: a might still be working
    time.sleep(0.1)
    again = b.read(count=10)
    assert [d.message for d in again] == [2, 3, 4]
    b.ack(*(d.id for d in again))
    assert b.pending() == 0


def test_a_restarted_consumer_first_gets_its_own_unacked_messages(bus: RedisStreamBus) -> None:
    a = bus.consumer("ledger", "ledger-1", ["fill.BTCUSDT"], claim_idle_ms=None)
    for i in range(3):
        bus.publish("fill.BTCUSDT", i)
    assert [d.message for d in a.read(count=2)] == [0, 1]
    restarted = bus.consumer("ledger", "ledger-1", ["fill.BTCUSDT"], claim_idle_ms=None)
    first = restarted.read(count=1)
    second = restarted.read(count=10)
    assert [d.message for d in first + second] == [0, 1]  # its backlog, in order, without repeats
    assert [d.message for d in restarted.read(count=10)] == [2]  # then new ones


def test_a_group_created_later_still_sees_earlier_messages(bus: RedisStreamBus) -> None:
    bus.publish("system.critical", {"halt": True})
    late = bus.consumer("alerts", "x", ["system.critical"])
    assert [d.message for d in late.read()] == [{"halt": True}]
    only_new = bus.consumer("ui", "x", ["system.critical"], start_id="$")
    assert only_new.read() == []


def test_each_group_gets_every_message(bus: RedisStreamBus) -> None:
    g1 = bus.consumer("g1", "x", ["portfolio.pnl"])
    g2 = bus.consumer("g2", "x", ["portfolio.pnl"])
    for i in range(3):
        bus.publish("portfolio.pnl", i)
    assert [d.message for d in g1.read()] == [0, 1, 2]
    assert [d.message for d in g2.read()] == [0, 1, 2]


def test_maxlen_trims_only_non_critical_streams(bus: RedisStreamBus) -> None:
    trimmed = RedisStreamBus(URL, prefix=bus.prefix, maxlen=10)
    for i in range(2000):
        trimmed.publish("metrics.tick", i)
        if i < 300:
            trimmed.publish("order.filled", i)
    assert bus.redis.xlen(bus.key("metrics.tick")) < 2000
    assert bus.redis.xlen(bus.key("order.filled")) == 300
    trimmed.close()


def test_undecodable_entry_goes_to_dead_letter_not_round_and_round(bus: RedisStreamBus) -> None:
    c = bus.consumer("g", "x", ["ui.x"])
    bus.redis.xadd(bus.key("ui.x"), {b"m": b'{"type":"Nope"}'})
    bus.publish("ui.x", "fine")
    assert [d.message for d in c.read()] == ["fine"]
    assert c.pending() == 1  # "fine" awaits its ack; the bad one was acked and set aside
    dead: Any = bus.redis.xrange(f"{bus.prefix}:dead-letter")
    assert len(dead) == 1 and dead[0][1][b"topic"] == b"ui.x"


def test_blocking_read_times_out_empty(bus: RedisStreamBus) -> None:
    c = bus.consumer("g", "x", ["ui.idle"])
    t0 = time.perf_counter()
    assert c.read(block_ms=100) == []
    assert time.perf_counter() - t0 < 2


def test_ack_needs_ids_from_read(bus: RedisStreamBus) -> None:
    c = bus.consumer("g", "x", ["ui.x"])
    with pytest.raises(TypeError):
        c.ack("1-0")  # type: ignore[arg-type]
    assert c.ack(StreamId("ui.x", "1-0")) == 0


def test_unreachable_redis_is_a_clear_error() -> None:
    with pytest.raises(RedisBusError, match="not reachable"):
        RedisStreamBus("redis://127.0.0.1:1/0")
