"""The connection life of a websocket client: run, drop, back off, reconnect, until stopped.

Both Kraken websocket clients (the public book, the private executions) live the same life; only
what a session does and what a drop means differ. So the loop, its exponential backoff, its
logged reconnects and the start/stop/wait primitives live here once, and each client supplies
``_session`` (one connection, returning or raising when it ends) and the two hooks below.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, Self, TypeVar

import structlog
import websockets
from websockets.asyncio.client import ClientConnection

log = structlog.get_logger(__name__)

NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    websockets.exceptions.WebSocketException,
)


class _Counters(Protocol):
    reconnects: int


C = TypeVar("C", bound=_Counters)


class ReconnectingClient(Generic[C]):
    """Base of the websocket clients; subclasses call :meth:`_init_reconnect` in ``__init__``."""

    url: str
    backoff_initial_s: float
    backoff_max_s: float
    counters: C
    # errors that end a session and are retried; anything else propagates
    retry_on: tuple[type[BaseException], ...] = NETWORK_ERRORS
    reconnect_event = "ws.reconnect"

    def _init_reconnect(self, task_name: str) -> None:
        self._task_name = task_name
        self._ws: ClientConnection | None = None
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._attempt = 0  # consecutive connection attempts since the last good session
        self._task: asyncio.Task[None] | None = None

    # --- what subclasses provide -----------------------------------------------------------------
    async def _session(self) -> None:
        raise NotImplementedError

    def _on_session_end(self) -> None:
        """Always runs when a session ends (also at stop): forget per-connection state."""

    def _before_retry(self) -> None:
        """Runs before the backoff wait when the client will reconnect."""

    def _reason(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def _log_context(self) -> dict[str, Any]:
        return {}

    # --- shared ----------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` in a task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self._task_name)
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checked after every frame and state change.

        Bound it with ``asyncio.timeout`` when the caller cannot wait forever.
        """
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        """Sessions until :meth:`stop`; after each lost one, wait ``base·2^(n-1)`` (capped) and retry."""
        while not self._stop.is_set():
            reason = "closed"
            try:
                await self._session()
            except websockets.exceptions.InvalidURI:
                raise  # a configuration error: retrying cannot fix it
            except self.retry_on as exc:
                reason = self._reason(exc)
            finally:
                self._ws = None
                self._on_session_end()
            if self._stop.is_set():
                break
            self._before_retry()
            self._attempt += 1
            self.counters.reconnects += 1
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (self._attempt - 1))
            log.warning(
                self.reconnect_event,
                url=self.url,
                attempt=self._attempt,
                delay_s=delay,
                reason=reason,
                **self._log_context(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)


class ClientThread:
    """Runs a websocket client on its own event-loop thread, for the synchronous runtime.

    ``start()`` returns once the loop is up; ``stop()`` asks the client to stop on its own loop
    and joins (bounded). Subclasses that need more on the loop than ``client.run()`` override
    :meth:`_body`.
    """

    def __init__(self, client: ReconnectingClient[Any], name: str) -> None:
        self.client = client
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self.client.stop(), loop).result(timeout_s)
            thread.join(timeout_s)

    async def _body(self) -> None:
        await self.client.run()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._body()

        try:
            asyncio.run(main())
        finally:
            self._ready.set()
