"""A local exchange that speaks Kraken's REST API over a replayed real market.

It is the offline venue of paper trading, the venue chaos tests kill the trading engine against,
and the integration test of the ccxt-based Kraken adapter: the pinned ``ccxt.kraken`` talks to
it with only its API URLs changed. See ``server.serve`` for running it and ``exchange.Exchange``
for the semantics.
"""

from bastion.venues.local_exchange.auth import KrakenError, signed_request
from bastion.venues.local_exchange.exchange import DEFAULT_BALANCES, Exchange, ExchangeConfig
from bastion.venues.local_exchange.faults import FaultConfig, FaultInjector
from bastion.venues.local_exchange.pairs import DEFAULT_PAIRS
from bastion.venues.local_exchange.replay import MarketEvents
from bastion.venues.local_exchange.server import ExchangeServer, ServerThread, serve

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_PAIRS",
    "Exchange",
    "ExchangeConfig",
    "ExchangeServer",
    "FaultConfig",
    "FaultInjector",
    "KrakenError",
    "MarketEvents",
    "ServerThread",
    "serve",
    "signed_request",
]
