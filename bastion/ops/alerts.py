"""Alerts: tell a human when the system stopped itself or disagrees with a venue.

The channels (Slack, Discord, Telegram, e-mail, or any of the ~100 others) are Apprise URLs,
e.g. ``slack://T000/B000/XXXX``, ``discord://id/token``, ``tgram://bot_token/chat_id``,
``mailtos://user:pass@smtp.example.com?to=ops@example.com``. Apprise is used rather than four
hand-written webhook clients because each of those services changes its API now and then and a
well-kept library follows. The URLs carry tokens, so they come from the secrets
(:mod:`bastion.ops.secrets`: ``BASTION_ALERT_URLS`` or ``alerts.urls`` in the secrets file),
never from ``bastion.yaml``.

Sending must never slow or break trading: :meth:`Alerter.send` appends the alert to a JSON-lines
file in the state directory (the record that survives a dead webhook), then hands it to a
background thread through a bounded queue. A failed delivery is logged and counted, not raised.
The same alert repeated within ``dedupe_s`` is folded into a count, so a flapping venue does not
page someone forty times a minute.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

log = structlog.get_logger(__name__)

Level = Literal["info", "warning", "critical"]
_RANK = {"info": 0, "warning": 1, "critical": 2}


class AlertsConfig(BaseModel):
    """``alerts`` in ``bastion.yaml``: how loud, not where (the URLs are secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_level: Level = "warning"
    dedupe_s: float = Field(default=300.0, ge=0)
    queue_size: int = Field(default=256, ge=1)


class AlertConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Alert:
    title: str
    body: str
    level: Level
    ts: float
    repeats: int = 0  # how many identical alerts were folded into this one


def _notify_type(level: Level) -> Any:
    import apprise

    return {
        "info": apprise.NotifyType.INFO,
        "warning": apprise.NotifyType.WARNING,
        "critical": apprise.NotifyType.FAILURE,
    }[level]


def validate_urls(urls: list[str]) -> list[str]:
    """The URLs Apprise does not understand (a typo here means a silent pager)."""
    import apprise

    bad = []
    for u in urls:
        probe = apprise.Apprise()
        if not probe.add(u):
            bad.append(u)
    return bad


class Alerter:
    """Records every alert and delivers it to the configured channels in the background."""

    def __init__(
        self,
        urls: list[str],
        record_path: Path,
        config: AlertsConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import apprise

        self.config = config or AlertsConfig()
        bad = validate_urls(urls)
        if bad:
            # the URL may hold a token: name its scheme only
            schemes = ", ".join(sorted({u.split("://", 1)[0] + "://…" for u in bad}))
            raise AlertConfigError(f"alert channel URLs not understood by Apprise: {schemes}")
        self._apprise = apprise.Apprise()
        for u in urls:
            self._apprise.add(u)
        self.channels = len(urls)
        self.record_path = record_path
        record_path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._folded: dict[tuple[str, str], int] = {}
        self._q: queue.Queue[Alert | None] = queue.Queue(self.config.queue_size)
        self._lock = threading.Lock()
        self.sent = self.failed = self.dropped = self.suppressed = self.queued = 0
        self._thread = threading.Thread(target=self._worker, name="alerts", daemon=True)
        self._thread.start()

    def send(self, title: str, body: str, level: Level = "warning") -> bool:
        """Record and queue one alert; False when it was below the level or folded as a repeat."""
        if _RANK[level] < _RANK[self.config.min_level]:
            return False
        now = self._clock()
        key = (title, level)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.config.dedupe_s:
                self._folded[key] = self._folded.get(key, 0) + 1
                self.suppressed += 1
                return False
            self._last[key] = now
            repeats = self._folded.pop(key, 0)
        alert = Alert(title, body, level, now, repeats)
        with self.record_path.open("a") as f:
            f.write(
                json.dumps({"ts": now, "level": level, "title": title, "body": body, "repeats": repeats})
                + "\n"
            )
        if self.channels:
            try:
                self._q.put_nowait(alert)
                self.queued += 1
            except queue.Full:
                self.dropped += 1
                log.error("alert_dropped", title=title, risk_level="high", reason="alert queue full")
        return True

    def _worker(self) -> None:
        while True:
            alert = self._q.get()
            if alert is None:
                return
            body = alert.body + (f"\n({alert.repeats} similar alerts folded)" if alert.repeats else "")
            try:
                ok = bool(
                    self._apprise.notify(
                        title=f"[bastion {alert.level}] {alert.title}", body=body,
                        notify_type=_notify_type(alert.level),
                    )
                )  # fmt: skip
            except Exception as exc:  # a broken channel must not kill the worker
                ok = False
                log.error("alert_delivery_error", error=repr(exc), risk_level="high")
            if ok:
                self.sent += 1
            else:
                self.failed += 1
                log.error("alert_delivery_failed", title=alert.title, risk_level="high")

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until queued alerts were attempted: at shutdown, before exiting."""
        end = time.monotonic() + timeout_s
        while self.sent + self.failed < self.queued and time.monotonic() < end:
            time.sleep(0.02)

    def close(self) -> None:
        self.flush()
        self._q.put(None)
        self._thread.join(timeout=5)
