"""A local websocket server that replays one recorded ccxt ws case (tests only, 127.0.0.1).

After the client's subscribe frame it sends the case's ``messages`` in order (a "pass"); a
resubscribe (unsubscribe + subscribe) or a new connection starts a new pass, so the client
gets the snapshot again. Everything the client sends is recorded in ``received``. With
``starts_pass`` only the subscribes it accepts start (and unsubscribes cancel) a pass; the others
are answered by ``reply`` (a client that also subscribes to other channels).

Faults, each one-shot (armed for the next pass or connection, then consumed):

* ``drop_after(n)``: close the next connection after it has sent ``n`` frames;
* ``skip_frame(i, times=1)`` / ``corrupt_checksum(i, times=1)``: in the next ``times``
  passes, leave out ``messages[i]`` / send it with a wrong ``checksum`` (lost / corrupt frame);
* ``hold_at(i)``: in the next pass, wait before ``messages[i]`` until :meth:`release`.

Numbers are sent exactly as recorded: the case is parsed with ``parse_float=Decimal`` and
written back with :func:`dumps_exact`, so no value goes through a float.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Frame = Any


def dumps_exact(obj: Frame) -> str:
    """JSON text for an object whose non-integer numbers are Decimals (written as such)."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"not a JSON number: {obj}")
        return str(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in obj) + "]"
    return json.dumps(obj)


def is_subscribe(frame: Frame) -> bool:
    """Kraken v2 ``{"method": "subscribe"}`` or Polymarket perpetuals ``{"req": "sub"}``."""
    return isinstance(frame, dict) and (frame.get("method") == "subscribe" or frame.get("req") == "sub")


def is_unsubscribe(frame: Frame) -> bool:
    return isinstance(frame, dict) and (frame.get("method") == "unsubscribe" or frame.get("req") == "unsub")


def default_reply(frame: Frame) -> list[Frame]:
    """Answers to frames other than subscribe (Kraken v2 shapes)."""
    if not isinstance(frame, dict):
        return []
    if frame.get("method") == "ping":
        return [{"method": "pong", "req_id": frame.get("req_id")}]
    if frame.get("method") == "unsubscribe":
        params = frame.get("params") or {}
        symbols = params.get("symbol") or [None]
        return [
            {
                "method": "unsubscribe",
                "req_id": frame.get("req_id"),
                "result": {
                    "channel": params.get("channel"),
                    "depth": params.get("depth"),
                    "symbol": symbols[0],
                },
                "success": True,
            }
        ]
    return []


class ReplayServer:
    """``async with ReplayServer(case["messages"]) as server: server.url`` (ws://127.0.0.1:PORT/path)."""

    def __init__(
        self,
        messages: list[Frame],
        *,
        path: str = "/v2",
        id_key: str | None = "req_id",
        reply: Callable[[Frame], list[Frame]] = default_reply,
        starts_pass: Callable[[Frame], bool] = lambda frame: True,
    ) -> None:
        self.messages = messages
        self.path = path
        self.id_key = id_key  # the ack's request id is rewritten to the client's
        self.reply = reply
        self.starts_pass = starts_pass
        self.received: list[Frame] = []
        self.connections = 0
        self.passes_started = 0
        self.passes_completed = 0
        self.last_completed_pass = 0  # number of the last pass that sent all its frames
        self.frames_sent = 0
        self._drop_after: int | None = None
        self._skip: dict[int, int] = {}  # frame index -> passes left to apply the fault
        self._corrupt: dict[int, int] = {}
        self._hold_at: int | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Event()
        self._open: set[ServerConnection] = set()
        self._server: Server | None = None
        self.port = 0

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    async def __aenter__(self) -> ReplayServer:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ----------------------------------------------------------------------------- controls
    def drop_after(self, n: int) -> None:
        self._drop_after = n

    def skip_frame(self, index: int, times: int = 1) -> None:
        self._skip[index] = self._skip.get(index, 0) + times

    def corrupt_checksum(self, index: int, times: int = 1) -> None:
        self._corrupt[index] = self._corrupt.get(index, 0) + times

    def hold_at(self, index: int) -> None:
        self._hold_at = index
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    async def send(self, frame: Frame) -> None:
        """Send an extra frame on every open connection (e.g. a heartbeat as a barrier)."""
        for ws in list(self._open):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(dumps_exact(frame))

    async def close_all(self) -> None:
        for ws in list(self._open):
            await ws.close(1012, "replay server restart")

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def sent_by_client(
        self, *, skip_keys: tuple[str, ...] = (), ignore_methods: tuple[str, ...] = ("ping",)
    ) -> list[Frame]:
        """The client's frames without keepalives and without ``skip_keys`` (e.g. req_id)."""
        out = []
        for frame in self.received:
            if isinstance(frame, dict) and frame.get("method") in ignore_methods:
                continue
            if isinstance(frame, dict):
                frame = {k: v for k, v in frame.items() if k not in skip_keys}
            out.append(frame)
        return out

    # ----------------------------------------------------------------------------- serving
    def _pulse(self) -> None:
        self._changed.set()

    async def _handler(self, ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path != self.path:
            await ws.close(1008, f"unknown path {ws.request.path}")
            return
        self.connections += 1
        drop_after, self._drop_after = self._drop_after, None
        state = {"sent": 0, "drop_after": drop_after}
        self._open.add(ws)
        self._pulse()
        replay: asyncio.Task[None] | None = None
        try:
            async for raw in ws:
                frame = json.loads(raw, parse_float=Decimal)
                self.received.append(frame)
                self._pulse()
                ours = self.starts_pass(frame)
                if ours and is_unsubscribe(frame) and replay is not None:
                    replay.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await replay
                    replay = None
                if ours and is_subscribe(frame):
                    if replay is not None:
                        replay.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await replay
                    replay = asyncio.create_task(self._replay(ws, frame, state))
                    continue
                for answer in self.reply(frame):
                    await self._emit(ws, answer, state)
        except ConnectionClosed:
            pass
        finally:
            if replay is not None:
                replay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replay
            self._open.discard(ws)
            self._pulse()

    async def _emit(self, ws: ServerConnection, frame: Frame, state: dict[str, Any]) -> None:
        await ws.send(dumps_exact(frame))
        state["sent"] += 1
        self.frames_sent += 1
        self._pulse()
        if state["drop_after"] is not None and state["sent"] >= state["drop_after"]:
            state["drop_after"] = None
            await ws.close(1012, "replay drop")
            raise ConnectionClosed(None, None)

    @property
    def latest_pass_done(self) -> bool:
        """The most recently started pass has sent all its frames."""
        return self.passes_started > 0 and self.last_completed_pass == self.passes_started

    async def _replay(self, ws: ServerConnection, subscribe: Frame, state: dict[str, Any]) -> None:
        self.passes_started += 1
        number = self.passes_started
        skip, corrupt = _take(self._skip), _take(self._corrupt)
        hold, self._hold_at = self._hold_at, None
        req_id = subscribe.get(self.id_key) if self.id_key and isinstance(subscribe, dict) else None
        try:
            for index, message in enumerate(self.messages):
                if index == hold:
                    await self._release.wait()
                if index in skip:
                    continue
                frame = copy.deepcopy(message)
                if req_id is not None and isinstance(frame, dict) and self.id_key in frame:
                    frame[self.id_key] = req_id
                if index in corrupt:
                    _corrupt(frame)
                await self._emit(ws, frame, state)
        except ConnectionClosed:
            return
        self.passes_completed += 1
        self.last_completed_pass = number
        self._pulse()


def _take(faults: dict[int, int]) -> set[int]:
    """The frame indexes armed for this pass; each use consumes one of its passes."""
    armed = {i for i, left in faults.items() if left > 0}
    for i in armed:
        faults[i] -= 1
    return armed


def _corrupt(frame: Frame) -> None:
    """Flip one bit of every ``checksum`` in the frame (stays an unsigned 32-bit int)."""
    if isinstance(frame, dict):
        for key, value in frame.items():
            if key == "checksum" and isinstance(value, int):
                frame[key] = value ^ 1
            else:
                _corrupt(value)
    elif isinstance(frame, list):
        for item in frame:
            _corrupt(item)
