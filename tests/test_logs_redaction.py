"""Secrets never reach a rendered log line, wherever they hide in the event."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bastion.ops import logs
from bastion.ops.logs import clear_registered_secrets, configure, install_stdlib_redaction, register_secret

API_KEY = "AKIA7d3f9a0b1c2e4f5a6b7c8d9e0f1a2b3c"  # 36 chars
API_SECRET = "q8Zr+3kP/vL0xYw2N5mT7bQ9cE1fH4jA6sD8gK0uI2o="  # base64, 44 chars
PASSPHRASE = "correct-horse-battery"
HEX_PRIVATE_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXZhbHVl"
UNREGISTERED = "never-registered-but-named-secret-9f8e7d"
PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n"
    "AwEHoUQDQgAEPR3tU2Fmb6Lp0+vPIAEq5PKbo7BwGOq2sX5Of3RCqVZvIDsRXpvv\n"
    "-----END EC PRIVATE KEY-----"
)
PEM_BODY = "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY"
REGISTERED = (API_KEY, API_SECRET, PASSPHRASE, HEX_PRIVATE_KEY)
EVERYTHING = (*REGISTERED, BEARER, UNREGISTERED, PEM_BODY)


@pytest.fixture(autouse=True)
def _secrets() -> Iterator[None]:
    clear_registered_secrets()
    for s in REGISTERED:
        assert register_secret(s)
    yield
    clear_registered_secrets()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def capture(json_logs: bool) -> io.StringIO:
    out = io.StringIO()
    configure(json_logs=json_logs, stream=out)
    return out


def assert_clean(text: str) -> None:
    for s in EVERYTHING:
        assert s not in text, f"secret leaked: {s[:12]}... in\n{text}"
    assert "***" in text


class Credentials:
    """An object whose repr embeds a key (as many client classes do)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Credentials(key={self.key})"


@pytest.mark.parametrize("json_logs", [True, False], ids=["json", "console"])
def test_secrets_in_every_place_are_masked(json_logs: bool) -> None:
    out = capture(json_logs)
    structlog.contextvars.bind_contextvars(strategy_id="mm1", session=f"login {PASSPHRASE}")
    log = structlog.get_logger("test").bind(client_order_id="c-1", venue_key=API_KEY)
    log.info(f"connecting with {API_KEY} and {API_SECRET}")
    log.info("kwargs", note=API_SECRET, hint=f"prefix-{HEX_PRIVATE_KEY}-suffix")
    log.info("named", api_key=UNREGISTERED, ApiSecret=UNREGISTERED, password=UNREGISTERED, token=1234567)
    log.info(
        "nested",
        request={
            "headers": {"Authorization": f"Bearer {BEARER}", "X-MBX-APIKEY": UNREGISTERED},
            "params": [("signature", UNREGISTERED), {"private_key": HEX_PRIVATE_KEY}],
            "body": {"deep": [[{"v": API_SECRET}]]},
        },
    )
    log.info("pem under an innocent key", blob=PEM, raw=API_SECRET.encode())
    log.info("url", url=f"https://api.example.com/order?symbol=BTC&signature={UNREGISTERED}&x=1")
    log.info("object", creds=Credentials(API_KEY), creds_list=[Credentials(API_SECRET)])
    try:
        try:
            raise KeyError(f"no account for {API_KEY}")
        except KeyError as inner:
            raise RuntimeError(f"auth failed: secret={UNREGISTERED} key={API_SECRET}") from inner
    except RuntimeError as exc:
        log.exception("venue error", error=exc)
    text = out.getvalue()
    assert_clean(text)
    # what must stay readable stays readable
    assert "mm1" in text and "c-1" in text and "connecting with" in text and "venue error" in text


def test_json_lines_are_valid_and_ordered() -> None:
    out = capture(json_logs=True)
    structlog.contextvars.bind_contextvars(strategy_id="mm1")
    structlog.get_logger().bind(risk_level="high").warning(
        "breaker", client_order_id="c-9", order_id="v-1", api_key=API_KEY, amount=1
    )
    line = json.loads(out.getvalue())
    assert list(line)[:7] == [
        "timestamp",
        "level",
        "event",
        "strategy_id",
        "order_id",
        "client_order_id",
        "risk_level",
    ]
    assert line["api_key"] == "***" and line["level"] == "warning" and line["amount"] == 1


def test_secret_registered_after_configure_and_escaped_forms() -> None:
    out = capture(json_logs=True)
    late = 'late"secret\\with-quotes-and-backslash'
    assert register_secret(late)
    structlog.get_logger().info("late", note=late, text=f"value {late} inside")
    text = out.getvalue()
    assert late not in text and json.dumps(late)[1:-1] not in text
    assert json.loads(text)["note"] == "***"


def test_short_or_empty_values_are_not_registered() -> None:
    assert not register_secret("")
    assert not register_secret(None)
    assert not register_secret("abc")
    out = capture(json_logs=True)
    structlog.get_logger().info("abc def")
    assert json.loads(out.getvalue())["event"] == "abc def"


def test_innocent_fields_are_untouched() -> None:
    out = capture(json_logs=True)
    structlog.get_logger().info(
        "order",
        tx_hash="0x" + "ab" * 32,  # long hex that is not a registered secret
        client_order_id="bastion-0001",
        tokens_used=3,
        max_position="0.5",
    )
    line = json.loads(out.getvalue())
    assert line["tx_hash"] == "0x" + "ab" * 32
    assert line["client_order_id"] == "bastion-0001"
    assert line["max_position"] == "0.5"


def test_stdlib_logging_is_scrubbed_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    install_stdlib_redaction([handler])
    install_stdlib_redaction([handler])  # idempotent
    assert sum(isinstance(f, logs.RedactingFilter) for f in handler.filters) == 1
    lg = logging.getLogger("test.ccxt")
    lg.propagate = False
    lg.addHandler(handler)
    try:
        lg.warning("headers %s", {"X-API-KEY": API_KEY, "Authorization": f"Bearer {BEARER}"})
        try:
            raise ValueError(f"signature mismatch for secret {API_SECRET}")
        except ValueError:
            lg.exception("request failed for %s", PASSPHRASE)
    finally:
        lg.removeHandler(handler)
    text = stream.getvalue()
    assert_clean(text)
    assert "request failed" in text and "ValueError" in text


def test_configure_keeps_its_old_signature() -> None:
    configure()
    configure(True, logging.DEBUG)
    configure(json_logs=False, level=logging.WARNING)


def test_redact_value_handles_odd_objects() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert logs.redact_value(BadRepr()) == "<unrepresentable BadRepr>"
    assert logs.redact_value(cyclic) is not None  # bounded depth, no recursion error
    assert logs.redact_value({"nested": {"secret": {"a": 1}}}) == {"nested": {"secret": "***"}}
