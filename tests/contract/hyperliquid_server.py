"""A local Hyperliquid (``POST /info``, ``POST /exchange``) for the contract tier, on 127.0.0.1 only.

A real ``ccxt.hyperliquid`` whose ``urls['api']`` public/private point here runs its own request
building, signing and parsing unchanged; so does :class:`bastion.venues.hyperliquid.HyperliquidVenue`.

Where each body's layout comes from (why a test can trust it). Every body is built by copying a
template and replacing the *values* of keys the template already has (:func:`_fill` refuses a
key the template lacks), so the field layout is the recorded one:

* Recorded mainnet traffic, the SDK's VCR cassettes (``hyperliquid/cassettes/info_test``):
  ``meta`` (served verbatim: the asset index, ``szDecimals`` and ``maxLeverage`` of each coin),
  ``allMids`` (verbatim: the mid each coin's book is built around), ``l2Book`` (verbatim for the
  recorded coin; for other coins the same 20+20 level layout around the recorded mid),
  ``historicalOrders`` records.
* ccxt's recorded responses (``ccxt/response/hyperliquid.json``): ``orderStatus``
  (fetchOrder "fetch postOnly order"), ``frontendOpenOrders`` records (fetchOpenOrders "open order
  using a non usdc hip3 market"), ``openOrders`` records (fetchOpenOrders "open orders"),
  ``userFills`` records (fetchMyTrades "user trades", the one with a cloid),
  ``clearinghouseState`` (fetchBalance "swap balance"; its positions from fetchPositions "short
  position"), the order answer envelope with a ``filled`` status (createOrder) and the
  ``{"type": "default"}`` answer (transfer).
* Not in any recording here; quoted in ccxt 4.5.90's source comments (``hyperliquid.py``):
  the ``{"resting": {"oid": N}}`` status, the cancel answer ``{"type": "cancel", "data":
  {"statuses": ["success"]}}``, ``{"status": "unknownOid"}``, the ``{"status": "err",
  "response": "User or API Wallet 0x... does not exist."}`` answer and the per-order
  ``{"error": "Insufficient margin to place order. asset=N"}`` status. The wording of the other
  per-order errors is the prefix ccxt's error table matches, plus ``asset=N`` as in that quote.
  An unknown ``/info`` type or an action the server cannot read gets HTTP 422 with a plain-text
  deserialisation message (not recorded either).

Signatures are verified, never trusted. For an L1 action (order, cancel, cancelByCloid,
setReferrer) the server puts the action's keys in the venue's canonical order, hashes
``msgpack(action) || nonce (8 bytes) || vault flag [|| expiresAfter]`` with keccak, builds the
EIP-712 "phantom agent" ``{source: "a", connectionId: hash}`` (mainnet, as ccxt signs) in the
``Exchange`` domain (chainId 1337) and recovers the signer with eth_account. ``approveBuilderFee``
is a user-signed action and is recovered in the ``HyperliquidSignTransaction`` domain. Like the
venue, the server never sees a key: if the recovered address is not the test wallet, the action
is refused with Hyperliquid's "User or API Wallet ... does not exist." answer (ccxt raises
InvalidOrder), so a wrong key, a testnet signature, a tampered action or a key order the venue
would hash differently all fail instead of passing.

Not modelled: nonce windows and replay, agents (API wallets), vaults, trigger orders, spot,
duplicate cloids, book depth (a crossing order fills in full at the touch), funding. Account and
order state (:class:`HyperliquidState`) lives outside the server so :meth:`restart` keeps it.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import msgpack
import yaml
from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
UNREADABLE = "Failed to deserialize the JSON body into the target type"
MAKER_FEE = Decimal("0.00015")  # ccxt's swap fee defaults for Hyperliquid's base tier
TAKER_FEE = Decimal("0.00045")
_CLOID = re.compile(r"^0x[0-9a-f]{32}$")

# --- recorded bodies --------------------------------------------------------------------------


def _cassette(name: str, info_type: str) -> Any:
    doc = yaml.safe_load((FIXTURES / "hyperliquid" / "cassettes" / "info_test" / name).read_text())
    for it in doc["interactions"]:
        if json.loads(it["request"]["body"]).get("type") == info_type:
            return json.loads(it["response"]["body"]["string"])
    raise LookupError(f"{name} has no {info_type} interaction")


def _ccxt_case(methods: dict[str, Any], method: str, description: str) -> Any:
    for case in methods[method]:
        if case["description"] == description:
            return copy.deepcopy(case["httpResponse"])
    raise LookupError(f"no {method} case {description!r}")


@dataclass(frozen=True)
class Recorded:
    """The recorded bodies every answer is shaped from (see the module docstring)."""

    meta: dict[str, Any]
    all_mids: dict[str, str]
    l2_book: dict[str, Any]
    historical_order: dict[str, Any]
    order_status: dict[str, Any]
    frontend_order: dict[str, Any]
    open_order: dict[str, Any]
    user_fill: dict[str, Any]
    clearinghouse: dict[str, Any]
    position: dict[str, Any]
    order_answer: dict[str, Any]
    default_answer: dict[str, Any]

    @classmethod
    def load(cls) -> Recorded:
        doc = json.loads((FIXTURES / "ccxt" / "response" / "hyperliquid.json").read_text())
        m = doc["methods"]
        return cls(
            meta=_cassette("test_get_info.yaml", "meta"),
            all_mids=_cassette("test_get_all_mids.yaml", "allMids"),
            l2_book=_cassette("test_get_l2_snapshot.yaml", "l2Book"),
            historical_order=_cassette("test_historical_orders.yaml", "historicalOrders")[0],
            order_status=_ccxt_case(m, "fetchOrder", "fetch postOnly order"),
            frontend_order=_ccxt_case(m, "fetchOpenOrders", "open order using a non usdc hip3 market")[0],
            open_order=_ccxt_case(m, "fetchOpenOrders", "open orders")[0],
            user_fill=_ccxt_case(m, "fetchMyTrades", "user trades")[0],
            clearinghouse=_ccxt_case(m, "fetchBalance", "swap balance"),
            position=_ccxt_case(m, "fetchPositions", "short position")["assetPositions"][0],
            order_answer=_ccxt_case(m, "createOrder", "create order"),
            default_answer=_ccxt_case(m, "transfer", "transfer"),
        )


@functools.cache
def recorded_bodies() -> Recorded:
    """Loaded once per process; every use copies what it serves, so sharing it is safe."""
    return Recorded.load()


def _fill(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A copy of a recorded record with some values replaced; a key it lacks is a bug here."""
    extra = set(values) - set(template)
    if extra:
        raise KeyError(f"not in the recorded layout: {sorted(extra)}")
    out = copy.deepcopy(template)
    out.update(values)
    return out


def _order_answer(recorded: Recorded, statuses: list[Any]) -> dict[str, Any]:
    body = copy.deepcopy(recorded.order_answer)
    body["response"]["data"]["statuses"] = statuses
    return body


def _cancel_answer(statuses: list[Any]) -> dict[str, Any]:
    return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}


def _err(text: str) -> dict[str, Any]:
    return {"status": "err", "response": text}


def _num(value: Decimal, places: int = 6) -> str:
    """Hyperliquid's number text: at most ``places`` decimals, at least one ("10000.0")."""
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN).normalize()
    text = format(q, "f")
    if text == "-0":
        text = "0"
    return text if "." in text else text + ".0"


def cloid_of(client_order_id: str) -> str:
    """The cloid a client order id maps to (first 16 bytes of SHA-256), kept here independently
    of the adapter so that a change of the adapter's derivation shows up as a failing test."""
    return "0x" + hashlib.sha256(client_order_id.encode("utf-8")).digest()[:16].hex()


# --- signatures -------------------------------------------------------------------------------


class Unreadable(Exception):
    """The body is not an action this server (or the venue) can deserialise."""


def _only(d: Any, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(d, dict) or not set(keys) <= set(d) or set(d) - set(keys) - set(optional):
        raise Unreadable(f"expected keys {keys} (+{optional}), got {d!r}")
    return {k: d[k] for k in (*keys, *optional) if k in d}


def _canonical_order_type(t: Any) -> dict[str, Any]:
    if isinstance(t, dict) and set(t) == {"limit"}:
        return {"limit": _only(t["limit"], ("tif",))}
    if isinstance(t, dict) and set(t) == {"trigger"}:
        return {"trigger": _only(t["trigger"], ("isMarket", "triggerPx", "tpsl"))}
    raise Unreadable(f"order type {t!r}")


def canonical_action(action: Any) -> dict[str, Any]:
    """The action with its keys in the venue's serialisation order (the order it hashes in)."""
    kind = action.get("type") if isinstance(action, dict) else None
    if kind == "order":
        out = _only(action, ("type", "orders", "grouping"), ("builder",))
        wires = []
        for w in out["orders"]:
            wire = _only(w, ("a", "b", "p", "s", "r", "t"), ("c",))
            wire["t"] = _canonical_order_type(wire["t"])
            wires.append(wire)
        out["orders"] = wires
        if "builder" in out:
            out["builder"] = _only(out["builder"], ("b", "f"))
        return out
    if kind == "cancel":
        out = _only(action, ("type", "cancels"))
        out["cancels"] = [_only(c, ("a", "o")) for c in out["cancels"]]
        return out
    if kind == "cancelByCloid":
        out = _only(action, ("type", "cancels"))
        out["cancels"] = [_only(c, ("asset", "cloid")) for c in out["cancels"]]
        return out
    if kind == "setReferrer":
        return _only(action, ("type", "code"))
    raise Unreadable(f"action type {kind!r}")


def l1_action_hash(
    action: dict[str, Any], nonce: int, vault: str | None = None, expires_after: int | None = None
) -> bytes:
    data = msgpack.packb(action) + nonce.to_bytes(8, "big")
    if vault is None:
        data += b"\x00"
    else:
        data += b"\x01" + bytes.fromhex(vault.removeprefix("0x"))
    if expires_after is not None:
        data += b"\x00" + expires_after.to_bytes(8, "big")
    return bytes(keccak(data))


def _eip712_domain_types() -> list[dict[str, str]]:
    return [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ]


def _recover(typed: dict[str, Any], signature: Any) -> str:
    sig = _only(signature, ("r", "s", "v"))
    vrs = (int(sig["v"]), int(str(sig["r"]), 16), int(str(sig["s"]), 16))
    return str(Account.recover_message(encode_typed_data(full_message=typed), vrs=vrs))


def recover_l1_signer(
    action: dict[str, Any],
    nonce: int,
    signature: Any,
    vault: str | None = None,
    expires_after: int | None = None,
    mainnet: bool = True,
) -> str:
    """The address that signed an L1 action (``action`` already in canonical key order)."""
    typed = {
        "domain": {"chainId": 1337, "name": "Exchange", "verifyingContract": ZERO_ADDRESS, "version": "1"},
        "types": {
            "EIP712Domain": _eip712_domain_types(),
            "Agent": [{"name": "source", "type": "string"}, {"name": "connectionId", "type": "bytes32"}],
        },
        "primaryType": "Agent",
        "message": {
            "source": "a" if mainnet else "b",
            "connectionId": l1_action_hash(action, nonce, vault, expires_after),
        },
    }
    return _recover(typed, signature)


_USER_SIGNED_TYPES = {
    "approveBuilderFee": (
        "HyperliquidTransaction:ApproveBuilderFee",
        [
            {"name": "hyperliquidChain", "type": "string"},
            {"name": "maxFeeRate", "type": "string"},
            {"name": "builder", "type": "address"},
            {"name": "nonce", "type": "uint64"},
        ],
    ),
}


def recover_user_signer(action: dict[str, Any], signature: Any) -> str:
    """The address that signed a user-signed action (EIP-712 over the action's own fields)."""
    primary, fields = _USER_SIGNED_TYPES[str(action.get("type"))]
    try:
        message = {f["name"]: action[f["name"]] for f in fields}
        chain_id = int(str(action["signatureChainId"]), 16)
    except (KeyError, ValueError) as exc:
        raise Unreadable(str(exc)) from exc
    typed = {
        "domain": {
            "chainId": chain_id,
            "name": "HyperliquidSignTransaction",
            "verifyingContract": ZERO_ADDRESS,
            "version": "1",
        },
        "types": {"EIP712Domain": _eip712_domain_types(), primary: fields},
        "primaryType": primary,
        "message": message,
    }
    return _recover(typed, signature)


# --- state ------------------------------------------------------------------------------------


@dataclass
class SimOrder:
    oid: int
    cloid: str | None
    coin: str
    asset: int
    side: str  # "B" or "A", as the venue writes it
    limit_px: Decimal
    orig_sz: Decimal
    sz: Decimal
    tif: str
    reduce_only: bool
    timestamp: int
    status: str = "open"
    status_ts: int = 0


@dataclass
class Position:
    szi: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)


class PerOrderError(Exception):
    """A definite refusal of one order: the venue answers it as ``{"error": ...}`` in a 200."""


@dataclass
class HyperliquidState:
    """The venue's memory: one test account, its orders, fills and positions."""

    wallet: str
    usdc: Decimal = Decimal("10000")
    leverage: int = 20
    recorded: Recorded = field(default_factory=recorded_bodies)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    by_cloid: dict[str, int] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    next_oid: int = 80_972_193_016  # continues the recorded oid range
    next_tid: int = 566_849_930_446_139
    actions: list[dict[str, Any]] = field(default_factory=list)  # what /exchange saw, for tests
    lose_next: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.wallet = self.wallet.lower()
        self.universe: list[dict[str, Any]] = list(self.recorded.meta["universe"])

    # --- market ---------------------------------------------------------------------------------
    def mid(self, coin: str) -> Decimal:
        return Decimal(self.recorded.all_mids[coin])

    def sz_decimals(self, asset: int) -> int:
        return int(self.universe[asset]["szDecimals"])

    def tick(self, coin: str, asset: int) -> Decimal:
        """The price step near the mid: 5 significant figures, at most 6 - szDecimals decimals."""
        digits = len(str(int(self.mid(coin))))
        decimals = max(0, 5 - digits) if self.mid(coin) >= 1 else 5
        return Decimal(1).scaleb(-min(decimals, 6 - self.sz_decimals(asset)))

    def touch(self, coin: str, asset: int) -> tuple[Decimal, Decimal]:
        mid, tick = self.mid(coin), self.tick(coin, asset)
        return (mid - tick).quantize(tick), (mid + tick).quantize(tick)

    def l2_book(self, coin: str) -> dict[str, Any] | None:
        rec = self.recorded.l2_book
        if coin == rec["coin"]:
            return copy.deepcopy(rec)
        if coin not in self.recorded.all_mids:
            return None
        asset = next(i for i, u in enumerate(self.universe) if u["name"] == coin)
        tick = self.tick(coin, asset)
        bid, ask = self.touch(coin, asset)
        levels = [
            [_fill(lv, px=_num(bid - i * tick)) for i, lv in enumerate(rec["levels"][0])],
            [_fill(lv, px=_num(ask + i * tick)) for i, lv in enumerate(rec["levels"][1])],
        ]
        return _fill(rec, coin=coin, levels=levels, time=_now_ms())

    # --- account --------------------------------------------------------------------------------
    def _max_leverage(self, coin: str) -> int:
        return int(next(u["maxLeverage"] for u in self.universe if u["name"] == coin))

    def _summary(self) -> dict[str, Decimal]:
        ntl = upnl = signed = margin = maint = Decimal(0)
        for coin, p in self.positions.items():
            if not p.szi:
                continue
            mid = self.mid(coin)
            ntl += abs(p.szi) * mid
            signed += p.szi * mid
            upnl += p.szi * (mid - p.entry)
            margin += abs(p.szi) * mid / self.leverage
            maint += abs(p.szi) * mid / (2 * self._max_leverage(coin))
        value = self.usdc + upnl
        return {"value": value, "ntl": ntl, "raw": value - signed, "margin": margin, "maint": maint}

    def _open_order_margin(self) -> Decimal:
        return sum(
            (o.limit_px * o.sz / self.leverage for o in self.orders.values() if o.status == "open"),
            Decimal(0),
        )

    def clearinghouse_state(self, user: str) -> dict[str, Any]:
        rec = self.recorded.clearinghouse
        s = (
            self._summary()
            if user.lower() == self.wallet
            else dict.fromkeys(("value", "ntl", "raw", "margin", "maint"), Decimal(0))
        )
        summary = _fill(
            rec["marginSummary"],
            accountValue=_num(s["value"]),
            totalNtlPos=_num(s["ntl"]),
            totalRawUsd=_num(s["raw"]),
            totalMarginUsed=_num(s["margin"]),
        )
        positions = []
        if user.lower() == self.wallet:
            for coin, p in sorted(self.positions.items()):
                if not p.szi:
                    continue
                mid = self.mid(coin)
                upnl = p.szi * (mid - p.entry)
                used = abs(p.szi) * mid / self.leverage
                entry_margin = abs(p.szi) * p.entry / self.leverage
                inner = _fill(
                    self.recorded.position["position"],
                    coin=coin,
                    szi=_num(p.szi),
                    leverage=_fill(self.recorded.position["position"]["leverage"], value=self.leverage),
                    entryPx=_num(p.entry),
                    positionValue=_num(abs(p.szi) * mid),
                    unrealizedPnl=_num(upnl),
                    returnOnEquity=_num(upnl / entry_margin if entry_margin else Decimal(0), 10),
                    liquidationPx=None,
                    marginUsed=_num(used),
                    maxLeverage=self._max_leverage(coin),
                    cumFunding={"allTime": "0.0", "sinceOpen": "0.0", "sinceChange": "0.0"},
                )
                positions.append(_fill(self.recorded.position, position=inner))
        return _fill(
            rec,
            marginSummary=summary,
            crossMarginSummary=copy.deepcopy(summary),
            crossMaintenanceMarginUsed=_num(s["maint"]),
            withdrawable=_num(max(Decimal(0), s["value"] - s["margin"])),
            assetPositions=positions,
            time=_now_ms(),
        )

    # --- orders ---------------------------------------------------------------------------------
    def _order_record(self, o: SimOrder) -> dict[str, Any]:
        return _fill(
            self.recorded.frontend_order,
            coin=o.coin,
            side=o.side,
            limitPx=_num(o.limit_px),
            sz=_num(o.sz),
            oid=o.oid,
            timestamp=o.timestamp,
            triggerCondition="N/A",
            isTrigger=False,
            triggerPx="0.0",
            children=[],
            isPositionTpsl=False,
            reduceOnly=o.reduce_only,
            orderType="Limit",
            origSz=_num(o.orig_sz),
            tif=o.tif,
            cloid=o.cloid,
        )

    def find(self, oid_or_cloid: Any) -> SimOrder | None:
        if isinstance(oid_or_cloid, str) and _CLOID.match(oid_or_cloid.lower()):
            oid = self.by_cloid.get(oid_or_cloid.lower())
            return None if oid is None else self.orders.get(oid)
        try:
            return self.orders.get(int(oid_or_cloid))
        except (TypeError, ValueError):
            return None

    def order_status(self, user: str, oid_or_cloid: Any) -> dict[str, Any]:
        o = self.find(oid_or_cloid) if user.lower() == self.wallet else None
        if o is None:
            return {"status": "unknownOid"}
        rec = self.recorded.order_status
        entry = _fill(rec["order"], order=self._order_record(o), status=o.status, statusTimestamp=o.status_ts)
        return _fill(rec, status="order", order=entry)

    def open_orders(self, user: str, frontend: bool) -> list[dict[str, Any]]:
        if user.lower() != self.wallet:
            return []
        live = sorted((o for o in self.orders.values() if o.status == "open"), key=lambda o: -o.oid)
        if frontend:
            return [self._order_record(o) for o in live]
        return [
            _fill(
                self.recorded.open_order,
                coin=o.coin,
                limitPx=_num(o.limit_px),
                oid=o.oid,
                origSz=_num(o.orig_sz),
                side=o.side,
                sz=_num(o.sz),
                timestamp=o.timestamp,
            )
            for o in live
        ]

    def historical_orders(self, user: str) -> list[dict[str, Any]]:
        if user.lower() != self.wallet:
            return []
        return [
            _fill(
                self.recorded.historical_order,
                order=self._order_record(o),
                status=o.status,
                statusTimestamp=o.status_ts,
            )
            for o in sorted(self.orders.values(), key=lambda o: -o.oid)
        ]

    def user_fills(self, user: str) -> list[dict[str, Any]]:
        return list(reversed(self.fills)) if user.lower() == self.wallet else []

    def place(self, wire: dict[str, Any]) -> dict[str, Any]:
        """One order wire; the status entry the venue answers for it."""
        asset = int(wire["a"])
        if not 0 <= asset < len(self.universe):
            raise Unreadable(f"asset {asset}")
        coin = str(self.universe[asset]["name"])
        try:
            px, sz = Decimal(str(wire["p"])), Decimal(str(wire["s"]))
        except ArithmeticError as exc:
            raise Unreadable(str(exc)) from exc
        szd = self.sz_decimals(asset)
        if sz <= 0 or -sz.normalize().as_tuple().exponent > szd:  # type: ignore[operator]
            raise PerOrderError(f"Order has invalid size. asset={asset}")
        decimals = max(0, -px.normalize().as_tuple().exponent)  # type: ignore[operator]
        sig_figs = len(px.normalize().as_tuple().digits)
        if px <= 0 or decimals > 6 - szd or (sig_figs > 5 and px != px.to_integral_value()):
            raise PerOrderError(f"Price must be divisible by tick size. asset={asset}")
        if px * sz < 10:
            raise PerOrderError(f"Order must have minimum value of $10. asset={asset}")
        buy = bool(wire["b"])
        reduce_only = bool(wire["r"])
        pos = self.positions.get(coin, Position())
        if reduce_only and (pos.szi == 0 or (pos.szi > 0) == buy):
            raise PerOrderError(f"Reduce only order would increase position. asset={asset}")
        tif = str(wire["t"].get("limit", {}).get("tif", ""))
        if tif not in ("Gtc", "Ioc", "Alo"):
            raise Unreadable(f"tif {tif!r}")
        bid, ask = self.touch(coin, asset)
        crosses = px >= ask if buy else px <= bid
        if crosses and tif == "Alo":
            raise PerOrderError(
                "Post only order would have immediately matched, "
                f"bbo was {_num(bid)}@{_num(ask)}. asset={asset}"
            )
        if not crosses and tif == "Ioc":
            raise PerOrderError(
                f"Order could not immediately match against any resting orders. asset={asset}"
            )
        s = self._summary()
        free = s["value"] - s["margin"] - self._open_order_margin()
        if not reduce_only and px * sz / self.leverage > free:
            raise PerOrderError(f"Insufficient margin to place order. asset={asset}")
        now = _now_ms()
        cloid = str(wire["c"]).lower() if wire.get("c") else None
        o = SimOrder(
            self.next_oid, cloid, coin, asset, "B" if buy else "A", px, sz, sz, tif, reduce_only, now
        )
        o.status_ts = now
        self.next_oid += 1
        self.orders[o.oid] = o
        if cloid is not None:
            self.by_cloid[cloid] = o.oid
        if not crosses:
            return {"resting": {"oid": o.oid}}
        touch = ask if buy else bid
        self._execute(o, sz, touch, crossed=True)
        filled = self.recorded.order_answer["response"]["data"]["statuses"][0]["filled"]
        return {"filled": _fill(filled, totalSz=_num(sz), avgPx=_num(touch), oid=o.oid)}

    def _execute(self, o: SimOrder, qty: Decimal, px: Decimal, crossed: bool) -> None:
        sign = 1 if o.side == "B" else -1
        pos = self.positions.setdefault(o.coin, Position())
        start = pos.szi
        delta = sign * qty
        closed = Decimal(0)
        if start == 0 or (start > 0) == (delta > 0):
            pos.entry = (pos.entry * abs(start) + px * qty) / (abs(start) + qty)
        else:
            closed = min(abs(start), qty)
            pnl = (px - pos.entry) * closed * (1 if start > 0 else -1)
            self.usdc += pnl
            if qty > abs(start):
                pos.entry = px
        pos.szi = start + delta
        fee = (px * qty * (TAKER_FEE if crossed else MAKER_FEE)).quantize(Decimal("0.000001"))
        self.usdc -= fee
        o.sz -= qty
        now = _now_ms()
        if o.sz == 0:
            o.status, o.status_ts = "filled", now
        direction = (
            ("Open Long" if sign > 0 else "Open Short")
            if not closed
            else ("Close Short" if sign > 0 else "Close Long")
        )
        self.fills.append(
            _fill(
                self.recorded.user_fill,
                cloid=o.cloid,
                closedPnl="0.0",
                coin=o.coin,
                crossed=crossed,
                dir=direction,
                fee=_num(fee),
                hash="0x" + keccak(f"{o.oid}:{self.next_tid}".encode()).hex(),
                liquidationMarkPx=None,
                oid=o.oid,
                px=_num(px),
                side=o.side,
                startPosition=_num(start),
                sz=_num(qty),
                tid=self.next_tid,
                time=now,
                feeToken="USDC",
            )
        )
        self.next_tid += 1

    def cancel(self, o: SimOrder | None, asset: int) -> Any:
        if o is None or o.asset != asset or o.status != "open":
            return {"error": "Order was never placed, already canceled, or filled. asset=" + str(asset)}
        o.status, o.status_ts = "canceled", _now_ms()
        return "success"

    def fill(self, client_order_id_or_cloid: str, qty: Decimal) -> None:
        """A counterparty takes ``qty`` of a resting order at its limit price (the order is maker)."""
        key = client_order_id_or_cloid
        cloid = key.lower() if _CLOID.match(key.lower()) else cloid_of(key)
        with self.lock:
            o = self.find(cloid)
            if o is None or o.status != "open":
                raise LookupError(f"no open order under {key} ({cloid})")
            if not 0 < qty <= o.sz:
                raise ValueError(f"fill {qty} does not fit the remaining {o.sz}")
            self._execute(o, qty, o.limit_px, crossed=False)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- HTTP -------------------------------------------------------------------------------------


class HyperliquidServer:
    """The HTTP face of a :class:`HyperliquidState`, in a background thread with its own loop."""

    def __init__(self, state: HyperliquidState, host: str = HOST, port: int = 0) -> None:
        if host != HOST:
            raise ValueError("the contract server only listens on 127.0.0.1")
        self.state = state
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> HyperliquidServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="hyperliquid-contract", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        self._loop = self._thread = None

    def restart(self) -> None:
        """Stop (every connection drops) and start again on the same port with the same state."""
        self.stop()
        self.start()

    def __enter__(self) -> HyperliquidServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/info", self._info), web.post("/exchange", self._exchange)])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])

    # --- controls (test thread) -----------------------------------------------------------------
    def fill(self, client_order_id: str, qty: Decimal) -> None:
        self.state.fill(client_order_id, qty)

    def lose_next_response(self) -> None:
        """The next order action is processed, then the connection drops without an answer."""
        with self.state.lock:
            self.state.lose_next = True

    # --- /info ----------------------------------------------------------------------------------
    async def _info(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
            kind = body["type"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=422, text=UNREADABLE)
        st = self.state
        user = str(body.get("user") or "")
        with st.lock:
            if kind == "meta":
                answer: Any = copy.deepcopy(st.recorded.meta)
            elif kind == "allMids":
                answer = dict(st.recorded.all_mids)
            elif kind == "l2Book":
                answer = st.l2_book(str(body.get("coin")))
            elif kind == "clearinghouseState":
                answer = st.clearinghouse_state(user)
            elif kind == "orderStatus":
                answer = st.order_status(user, body.get("oid"))
            elif kind in ("openOrders", "frontendOpenOrders"):
                answer = st.open_orders(user, frontend=kind == "frontendOpenOrders")
            elif kind == "historicalOrders":
                answer = st.historical_orders(user)
            elif kind == "userFills":
                answer = st.user_fills(user)
            else:
                return web.Response(status=422, text=UNREADABLE)
        return web.json_response(answer)

    # --- /exchange ------------------------------------------------------------------------------
    async def _exchange(self, request: web.Request) -> web.StreamResponse:
        st = self.state
        try:
            body = json.loads(await request.text())
            raw_action, nonce, signature = body["action"], int(body["nonce"]), body["signature"]
            kind = str(raw_action.get("type"))
            if kind in _USER_SIGNED_TYPES:
                action = raw_action
                signer = recover_user_signer(action, signature)
            else:
                action = canonical_action(raw_action)
                expires = body.get("expiresAfter")
                signer = recover_l1_signer(
                    action,
                    nonce,
                    signature,
                    body.get("vaultAddress"),
                    None if expires is None else int(expires),
                )
        except (Unreadable, ValueError, KeyError, TypeError, AttributeError):
            return web.Response(status=422, text=UNREADABLE)
        ok = signer.lower() == st.wallet
        with st.lock:
            st.actions.append({"type": kind, "signer": signer.lower(), "accepted": ok})
        if not ok:
            return web.json_response(_err(f"User or API Wallet {signer.lower()} does not exist."))
        lose = False
        try:
            with st.lock:
                if kind == "order":
                    statuses = []
                    for wire in action["orders"]:
                        try:
                            statuses.append(st.place(wire))
                        except PerOrderError as exc:
                            statuses.append({"error": str(exc)})
                    answer = _order_answer(st.recorded, statuses)
                    lose, st.lose_next = st.lose_next, False
                elif kind == "cancel":
                    answer = _cancel_answer(
                        [st.cancel(st.find(c["o"]), int(c["a"])) for c in action["cancels"]]
                    )
                elif kind == "cancelByCloid":
                    answer = _cancel_answer(
                        [st.cancel(st.find(str(c["cloid"])), int(c["asset"])) for c in action["cancels"]]
                    )
                else:  # approveBuilderFee, setReferrer: accepted, nothing to keep
                    answer = copy.deepcopy(st.recorded.default_answer)
        except Unreadable:
            return web.Response(status=422, text=UNREADABLE)
        if lose:
            if request.transport is not None:
                request.transport.abort()  # the order exists; its answer never arrives
            raise asyncio.CancelledError
        return web.json_response(answer)
