"""Every venue Bastion knows, and what each can do, in one declarative table.

Why a table: the gateway, the checklist, ``bastion run`` and the tests all need to ask "can this
venue rest a post-only order?", "does it stream our own fills?", "which ccxt class talks to it?"
Answering that from scattered ``if venue == ...`` branches is how an adapter ends up sending an
order type the venue silently converts. Here each venue is one row; the per-venue modules hold
only the quirks (signing details, id mapping) that a row cannot express.

Whether a venue may be *used* is not decided here: that is the compliance policy
(:mod:`bastion.risk.policy`, configured in ``bastion.yaml``). This table only says what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    CEX = "cex"
    DEX_PERP = "dex_perp"
    PREDICTION = "prediction"
    SIMULATED = "simulated"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the venue's API supports, as Bastion uses it (not every feature the venue has)."""

    order_types: tuple[str, ...] = ("limit", "market")
    post_only: bool = True
    reduce_only: bool = False
    ioc: bool = True
    client_order_id: bool = True
    ws_book: bool = True
    ws_trades: bool = True
    ws_own_orders: bool = True
    funding: bool = False
    book_checksum: bool = False  # the venue sends a checksum we can verify the local book against


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """One venue: its name (as the compliance policy spells it), how to reach it, what it can do."""

    name: str
    kind: Kind
    ccxt_id: str | None
    caps: Capabilities
    # requests per second the venue's public documentation allows a retail key; the shared
    # limiter (bastion.venues.rate_limit) keeps every caller of the venue under it together
    rate_per_second: float
    burst: int
    credentials: tuple[str, ...]  # environment variable suffixes the adapter needs


_CEX_FULL = Capabilities()

VENUES: dict[str, VenueSpec] = {
    v.name: v
    for v in (
        VenueSpec(
            "kraken", Kind.CEX, "kraken", Capabilities(book_checksum=True), 1.0, 15, ("API_KEY", "API_SECRET")
        ),
        VenueSpec(
            "coinbase",
            Kind.CEX,
            "coinbase",
            Capabilities(reduce_only=True),
            10.0,
            30,
            ("API_KEY", "API_SECRET"),
        ),
        VenueSpec("gemini", Kind.CEX, "gemini", _CEX_FULL, 5.0, 10, ("API_KEY", "API_SECRET")),
        VenueSpec("mexc", Kind.CEX, "mexc", _CEX_FULL, 10.0, 20, ("API_KEY", "API_SECRET")),
        VenueSpec(
            "gateio",
            Kind.CEX,
            "gate",
            Capabilities(reduce_only=True, funding=True),
            10.0,
            20,
            ("API_KEY", "API_SECRET"),
        ),
        VenueSpec(
            "hyperliquid",
            Kind.DEX_PERP,
            "hyperliquid",
            Capabilities(order_types=("limit",), reduce_only=True, funding=True),
            20.0,
            40,
            ("WALLET_ADDRESS", "PRIVATE_KEY"),
        ),
        VenueSpec(
            "polymarket",
            Kind.PREDICTION,
            None,  # py-clob-client-v2, not ccxt
            Capabilities(order_types=("limit",), post_only=False, ioc=False, client_order_id=False),
            10.0,
            20,
            ("PRIVATE_KEY", "FUNDER"),
        ),
        VenueSpec(
            "bitget",
            Kind.CEX,
            "bitget",
            Capabilities(reduce_only=True, funding=True),
            10.0,
            20,
            ("API_KEY", "API_SECRET", "PASSWORD"),
        ),
        VenueSpec(
            "kucoin",
            Kind.CEX,
            "kucoin",
            Capabilities(reduce_only=True),
            10.0,
            20,
            ("API_KEY", "API_SECRET", "PASSWORD"),
        ),
        # present so that configs naming them fail at the compliance policy, with its reason,
        # rather than as an unknown venue
        VenueSpec(
            "binance",
            Kind.CEX,
            "binance",
            Capabilities(reduce_only=True, funding=True),
            20.0,
            50,
            ("API_KEY", "API_SECRET"),
        ),
        VenueSpec(
            "bybit",
            Kind.CEX,
            "bybit",
            Capabilities(reduce_only=True, funding=True),
            10.0,
            20,
            ("API_KEY", "API_SECRET"),
        ),
        VenueSpec(
            "okx",
            Kind.CEX,
            "okx",
            Capabilities(reduce_only=True, funding=True),
            10.0,
            20,
            ("API_KEY", "API_SECRET", "PASSWORD"),
        ),
        VenueSpec(
            "sim", Kind.SIMULATED, None, Capabilities(reduce_only=True, funding=True), 1e9, 1_000_000, ()
        ),
    )
}


class UnknownVenue(KeyError):
    pass


def venue_spec(name: str) -> VenueSpec:
    """The row for ``name`` (case-insensitive); an unknown name raises with the known ones listed."""
    key = name.strip().lower()
    try:
        return VENUES[key]
    except KeyError:
        raise UnknownVenue(f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}") from None
