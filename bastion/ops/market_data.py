"""Where paper trading's market comes from: Kraken's live book, or the recorded replay.

``paper.market_data`` (``bastion run --market-data``, ``bastion exchange --market-data``):

* ``replay``: the local exchange replays the recorded capture (no network at all);
* ``live``: it follows the live market at ``market_url`` (Kraken's public websocket v2 by
  default) and simulates fills against it; if no verified book arrives within ``probe_s`` the
  start is refused — a run that asked for the live market must not quietly trade a recording;
* ``auto`` (the default of ``bastion run``): live when reachable, otherwise the replay, with one
  line saying why.

``BASTION_OFFLINE=1`` (set for every test run) turns ``auto`` into the replay before anything
connects and refuses ``live`` on any URL that is not on this machine.

The choice is made in the exchange process (it owns the feed); the runner reads the outcome from
the exchange's ``/_bastion/market`` and shows it (:func:`summarize`, :func:`describe`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.venues.kraken_ws import DEFAULT_URL
from bastion.venues.local_exchange.live_feed import OFFLINE_ENV, LiveFeed, check_offline, offline

MODES = ("auto", "replay", "live")
DEFAULT_MARKET_URL = DEFAULT_URL
DEFAULT_PROBE_S = 5.0
EXIT_MARKET_REFUSED = 3  # the exchange process's exit code when live market data cannot be had


class MarketDataError(ValueError):
    """Live market data was asked for and cannot be had (or may not be, offline)."""


@dataclass(frozen=True, slots=True)
class MarketChoice:
    requested: str
    used: str  # "live" | "replay"
    url: str | None
    reason: str | None  # why the replay is used although a live market was asked for
    feed: LiveFeed | None = None

    def note(self) -> dict[str, Any]:
        """What the exchange reports about the choice (``/_bastion/market``)."""
        return {"requested": self.requested, "used": self.used, "url": self.url, "reason": self.reason}


def check_request(mode: str, url: str) -> None:
    """Refuse what can be refused before any process starts (bad mode; live while offline)."""
    if mode not in MODES:
        raise MarketDataError(f"market data must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "replay" and urlsplit(url).scheme not in ("ws", "wss"):
        raise MarketDataError(f"the live market URL must be ws:// or wss:// (websocket v2), got {url!r}")
    if mode == "live":
        try:
            check_offline(url)
        except ValueError as exc:
            raise MarketDataError(f"--market-data live: {exc}") from None


def choose(mode: str, url: str, probe_s: float, make_feed: Callable[[str], LiveFeed]) -> MarketChoice:
    """Start the live feed if asked (and allowed) and wait up to ``probe_s`` for a verified book.

    The probe is the feed itself, not a separate connection: when it succeeds the exchange opens
    on the book it has already verified. ``make_feed(url)`` builds the (unstarted) feed; the
    choice carries it running when the live market is used. Raises :class:`MarketDataError` for
    ``live`` without one.
    """
    check_request(mode, url)
    if mode == "replay":
        return MarketChoice(mode, "replay", None, None)
    if mode == "auto" and offline():
        return MarketChoice(mode, "replay", url, f"{OFFLINE_ENV}=1: no connection attempted")
    feed = make_feed(url).start()
    if feed.wait_live(probe_s):
        return MarketChoice(mode, "live", url, None, feed)
    why = f"no verified book from {url} within {probe_s:g}s"
    error = feed.client.last_error
    feed.stop()
    if error:
        why += f" (last error: {error})"
    if mode == "live":
        raise MarketDataError(f"--market-data live: {why}; not starting (auto would fall back to the replay)")
    return MarketChoice(mode, "replay", url, why)


# --- what the runner shows --------------------------------------------------------------------------
class MarketReport:
    """Asks the exchange about its market; the last good answer while it cannot be asked.

    Status is shown every second: a slow or restarting exchange must cost a line's freshness,
    not the trading loop an exception.
    """

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self.last: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            self.last = self._fetch()
        return self.last


_FEED_COUNTERS = ("frames", "rows", "trades", "resyncs", "reconnects", "checksum_failures", "errors")


def summarize(doc: Mapping[str, Any], pair: str) -> dict[str, Any]:
    """The part of a ``/_bastion/market`` answer a run reports, for the pair it trades."""
    p = doc.get("pairs", {}).get(pair, {})
    out: dict[str, Any] = {
        "source": p.get("source", doc.get("used")),
        "requested": doc.get("requested"),
        "reason": doc.get("reason"),
    }
    if out["source"] == "live":
        feed = p.get("feed", {})
        out["url"] = feed.get("url", doc.get("url"))
        out["state"] = feed.get("state")
        out.update({k: feed.get(k) for k in _FEED_COUNTERS})
    else:
        out["data"] = p.get("data")
    return out


def describe(s: Mapping[str, Any]) -> str:
    """One line: ``live wss://… (live; frames 120, rows 2400, …)`` or ``replay <file>``."""
    if s.get("source") == "live":
        counters = ", ".join(f"{k.replace('_', ' ')} {s.get(k)}" for k in _FEED_COUNTERS)
        return f"live {s.get('url')} ({s.get('state')}; {counters})"
    text = f"replay {s.get('data')}"
    if s.get("reason"):
        text += f" ({s.get('requested')}: {s.get('reason')})"
    return text
