"""``mode: live``: the gate in front of real money, and the venue a live run trades.

Live trading needs three independent yeses, each of which a different mistake would otherwise
skip: the config says ``mode: live`` (not a paper config run with the wrong flag), the operator
typed ``--confirm-live LIVE`` on this invocation (not a config copied from a colleague), and the
compliance policy allows the venue. Then the venue's keys must be present in the environment or
the secrets file. Every reason to refuse is collected and reported together, before anything
connects anywhere, so an operator fixes them in one go.

What trades live in this version: the Kraken adapter, the one with a complete private fill path
(orders, fills by trade id, balances) proven by the chaos runs. The other adapters place, query
and cancel orders (see docs/venues.md) but do not yet stream their fills into the runtime; a live
config naming them is refused with that reason rather than half-working.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from bastion.engine.clock import WallClock
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.ops.config import BastionConfig
from bastion.ops.secrets import MissingCredentials, Secrets
from bastion.risk.policy import PolicyChecker
from bastion.venues.registry import UnknownVenue, venue_spec

CONFIRM_WORD = "LIVE"
LIVE_VENUES = ("kraken",)  # venues whose adapter carries the whole runtime path (see above)


class LiveModeRefused(ValueError):
    """``mode: live`` refused before anything connects anywhere; the message lists every reason."""


def live_refusals(cfg: BastionConfig, confirm: str | None, secrets: Secrets) -> list[str]:
    """Every reason not to start trading real money (empty: all three yeses and the keys)."""
    reasons: list[str] = []
    if cfg.mode != "live":
        reasons.append(f"mode is {cfg.mode!r}, not 'live'")
    if confirm != CONFIRM_WORD:
        reasons.append(
            f"live trading needs --confirm-live {CONFIRM_WORD} on the command line (typed exactly; "
            f"got {'nothing' if confirm is None else repr(confirm)})"
        )
    venue = cfg.live.venue.strip().lower()
    try:
        venue_spec(venue)
    except UnknownVenue as exc:
        reasons.append(str(exc.args[0]))
        return reasons
    allowed = PolicyChecker(cfg.risk, Fraction(1), WallClock()).venue_allowed(venue)
    if not allowed.ok:
        reasons.append(f"compliance policy refuses {venue}: {allowed.rule}: {allowed.detail}")
    if venue not in LIVE_VENUES:
        reasons.append(
            f"live trading on {venue} is not available in this version: its adapter does not yet "
            f"feed fills into the runtime (live venues: {', '.join(LIVE_VENUES)})"
        )
    try:
        secrets.credentials(venue)
    except MissingCredentials as exc:
        reasons.append(str(exc))
    return reasons


def check_live(cfg: BastionConfig, confirm: str | None, secrets: Secrets) -> None:
    reasons = live_refusals(cfg, confirm, secrets)
    if reasons:
        raise LiveModeRefused("refusing to trade live:\n  - " + "\n  - ".join(reasons))


def instrument_from_market(market: dict[str, Any], venue: str) -> Instrument:
    """A spot Instrument from a ccxt market (tick, lot and fees as the venue publishes them)."""
    if not market.get("spot"):
        raise ValueError(f"{market.get('symbol')}: only spot markets trade live in this version")
    prec = market["precision"]
    return Instrument(
        symbol=f"{market['base']}{market['quote']}",
        venue=venue.upper(),
        kind=InstrumentKind.SPOT,
        base=str(market["base"]),
        quote=str(market["quote"]),
        tick_size=Decimal(repr(prec["price"])),
        lot_size=Decimal(repr(prec["amount"])),
        maker_fee=Decimal(repr(market.get("maker") or 0)),
        taker_fee=Decimal(repr(market.get("taker") or 0)),
    )


def live_kraken_client(cfg: BastionConfig, secrets: Secrets) -> Any:
    """The ccxt Kraken client with the operator's keys (URL overridable for local tests only)."""
    import ccxt

    creds = secrets.credentials("kraken")
    ex = ccxt.kraken(
        {
            "apiKey": creds["api_key"],
            "secret": creds["api_secret"],
            # against Kraken itself ccxt paces every call at Kraken's REST budget (1 request/s), and
            # the REST-polling runner runs at that pace; a local exchange (tests) needs no pacing
            "enableRateLimit": cfg.live.api_url is None,
            "timeout": 10_000,
        }
    )
    if cfg.live.api_url:
        ex.urls["api"] = {**ex.urls["api"], "public": cfg.live.api_url, "private": cfg.live.api_url}
    ex.load_markets()
    return ex
