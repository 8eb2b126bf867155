"""ccxt's exception tree mapped onto the one question the gateway asks: may the order exist?

Shared by every ccxt-based adapter so the rule is written once: authentication failures are
fatal; timeouts, network trouble, 5xx and rate limits are retryable (the request may or may not
have been processed); only a submission's definite refusal (invalid order, insufficient funds, bad
request or symbol) is a rejection that releases money; anything unrecognised is treated as "may
exist" and left to verification by client order id. Per-venue modules add their quirks in front.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ccxt

from bastion.venues.base import VenueAuthError, VenueError, VenueRejected, VenueTimeout, VenueUnavailable

T = TypeVar("T")

REFUSALS = (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.BadSymbol)


def venue_error(exc: ccxt.BaseError, *, submitting: bool = False) -> VenueError:
    msg = str(exc)
    if isinstance(exc, ccxt.AuthenticationError):  # includes PermissionDenied
        return VenueAuthError(msg)
    if isinstance(exc, ccxt.RequestTimeout):
        return VenueTimeout(msg)
    if isinstance(exc, ccxt.NetworkError):  # ExchangeNotAvailable, DDoSProtection, RateLimitExceeded
        return VenueUnavailable(msg)
    if submitting and isinstance(exc, REFUSALS):
        return VenueRejected(msg)
    return VenueUnavailable(msg)  # cannot classify: the order may exist, verify it


def ccxt_call(fn: Callable[..., T], *args: Any) -> T:
    """Run one ccxt read or cancel, raising venue errors instead of ccxt's."""
    try:
        return fn(*args)
    except ccxt.BaseError as exc:
        raise venue_error(exc) from exc
