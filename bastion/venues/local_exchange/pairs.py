"""The pairs and assets the local exchange lists, with Kraken's own metadata.

Clients size orders from ``AssetPairs`` (tick, lot, minimums, fee schedule), so a local exchange
that invented those figures would let an adapter pass here and fail on the real venue.
``kraken_pairs.json`` therefore holds the raw ``GET /0/public/AssetPairs`` records of XBTUSDT and
XXBTZUSD exactly as recorded in ccxt's Kraken markets fixture
(``shared/fixtures/ccxt/markets/kraken.json``, the ``info`` of BTC/USDT and BTC/USD; the test suite
checks they still match). The asset records below follow Kraken's ``Assets`` documentation
(there is no recording of that endpoint in the fixtures).

Numbers the exchange computes with are read once into :class:`PairSpec` as integers and
fractions, so matching and settlement stay exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from typing import Any

DEFAULT_PAIRS: tuple[str, ...] = ("XBTUSDT", "XXBTZUSD")

# GET /0/public/Assets records (Kraken documentation): decimals is the ledger precision.
ASSETS: dict[str, dict[str, Any]] = {
    "XXBT": {
        "aclass": "currency",
        "altname": "XBT",
        "decimals": 10,
        "display_decimals": 5,
        "collateral_value": 1.0,
        "status": "enabled",
    },
    "ZUSD": {
        "aclass": "currency",
        "altname": "USD",
        "decimals": 4,
        "display_decimals": 2,
        "collateral_value": 1.0,
        "status": "enabled",
    },
    "USDT": {
        "aclass": "currency",
        "altname": "USDT",
        "decimals": 8,
        "display_decimals": 4,
        "collateral_value": 1.0,
        "status": "enabled",
    },
}


def load_pair_records() -> dict[str, dict[str, Any]]:
    """The verbatim AssetPairs records shipped with the package, keyed by Kraken pair id."""
    text = resources.files(__package__).joinpath("kraken_pairs.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)
    return data


def _rate(percent: Any) -> Fraction:
    return Fraction(Decimal(str(percent))) / 100


@dataclass(frozen=True, slots=True)
class PairSpec:
    """One pair's grid and fees as exact integers (raw units at the pair's own decimals)."""

    key: str  # Kraken pair id, e.g. XXBTZUSD
    altname: str  # e.g. XBTUSD (what order descriptions show)
    wsname: str
    base: str  # asset id, e.g. XXBT
    quote: str  # asset id, e.g. ZUSD
    pair_decimals: int
    lot_decimals: int
    cost_decimals: int
    tick_raw: int  # tick size in raw price units
    ordermin_raw: int  # minimum volume in raw lot units
    costmin_raw: int  # minimum cost in raw cost units
    maker_rate: Fraction  # base tier of fees_maker
    taker_rate: Fraction  # base tier of fees
    record: dict[str, Any]

    @classmethod
    def from_record(cls, key: str, rec: dict[str, Any]) -> PairSpec:
        pd = int(rec["pair_decimals"])
        ld = int(rec["lot_decimals"])
        cd = int(rec["cost_decimals"])
        tick = Decimal(str(rec.get("tick_size", Decimal(1).scaleb(-pd))))
        return cls(
            key=key,
            altname=str(rec["altname"]),
            wsname=str(rec["wsname"]),
            base=str(rec["base"]),
            quote=str(rec["quote"]),
            pair_decimals=pd,
            lot_decimals=ld,
            cost_decimals=cd,
            tick_raw=int(tick.scaleb(pd)),
            ordermin_raw=int(Decimal(str(rec.get("ordermin", "0"))).scaleb(ld)),
            costmin_raw=int(Decimal(str(rec.get("costmin", "0"))).scaleb(cd)),
            maker_rate=_rate(rec["fees_maker"][0][1]),
            taker_rate=_rate(rec["fees"][0][1]),
            record=rec,
        )


def pair_specs(keys: tuple[str, ...] = DEFAULT_PAIRS) -> dict[str, PairSpec]:
    records = load_pair_records()
    unknown = [k for k in keys if k not in records]
    if unknown:
        raise ValueError(f"no Kraken metadata for pairs {unknown}; known: {sorted(records)}")
    return {k: PairSpec.from_record(k, records[k]) for k in keys}


def balance_precisions(specs: dict[str, PairSpec]) -> dict[str, int]:
    """Decimals each asset's balance is kept at: fine enough for every amount that moves it.

    Kraken's ledger shows USD with 4 decimals while XBTUSD costs carry 5; keeping the finer of
    the two means a fill's cost and fee are booked exactly instead of being rounded a second time.
    """
    out: dict[str, int] = {}
    for s in specs.values():
        out[s.base] = max(out.get(s.base, 0), int(ASSETS.get(s.base, {}).get("decimals", 0)), s.lot_decimals)
        out[s.quote] = max(
            out.get(s.quote, 0), int(ASSETS.get(s.quote, {}).get("decimals", 0)), s.cost_decimals
        )
    return out
