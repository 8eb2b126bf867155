"""Kraken's private-endpoint authentication, checked for real.

``API-Sign`` = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata))). The
exchange verifies it with the configured dummy keys so that a signing bug in an adapter fails
here, offline, rather than on the first live order.

Which error a client sees matters, because ccxt maps them to different exceptions: an unknown
key, or a well-formed signature that does not verify (which is what a wrong secret produces,
and is indistinguishable from one), answers ``EAPI:Invalid key`` (``AuthenticationError``); a
header that is not a signature at all (missing, not base64, wrong length) answers
``EAPI:Invalid signature``; a nonce not above the last one accepted for the key answers
``EAPI:Invalid nonce`` (``InvalidNonce``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode


class KrakenError(Exception):
    """A Kraken error string, answered as ``{"error": [code]}``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


INVALID_KEY = "EAPI:Invalid key"
INVALID_SIGNATURE = "EAPI:Invalid signature"
INVALID_NONCE = "EAPI:Invalid nonce"


def decode_secret(secret_b64: str) -> bytes:
    try:
        return base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the API secret must be valid base64 (Kraken secrets are)") from exc


def signature(path: str, body: str, nonce: str, secret: bytes) -> str:
    digest = hashlib.sha256((nonce + body).encode()).digest()
    mac = hmac.new(secret, path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def parse_body(body: str, content_type: str) -> dict[str, str]:
    """Form (ccxt's default) or JSON (ccxt for batch orders and %-prices) into flat strings."""
    if content_type.startswith("application/json"):
        try:
            doc = json.loads(body or "{}")
        except ValueError as exc:
            raise KrakenError("EGeneral:Invalid arguments") from exc
        if not isinstance(doc, dict):
            raise KrakenError("EGeneral:Invalid arguments")
        return {k: _flat(v) for k, v in doc.items()}
    return dict(parse_qsl(body, keep_blank_values=True))


def _flat(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def verify(
    path: str, body: str, params: Mapping[str, str], headers: Mapping[str, str], keys: Mapping[str, bytes]
) -> tuple[str, int]:
    """Check key and signature; returns (api key, nonce). The nonce order is checked by the caller."""
    api_key = headers.get("API-Key", "")
    secret = keys.get(api_key)
    if not api_key or secret is None:
        raise KrakenError(INVALID_KEY)
    sign = headers.get("API-Sign", "")
    try:
        given = base64.b64decode(sign, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KrakenError(INVALID_SIGNATURE) from exc
    if len(given) != hashlib.sha512().digest_size:
        raise KrakenError(INVALID_SIGNATURE)
    nonce_text = params.get("nonce", "")
    expected = base64.b64decode(signature(path, body, nonce_text, secret))
    if not hmac.compare_digest(given, expected):
        raise KrakenError(INVALID_KEY)
    try:
        nonce = int(nonce_text)
    except ValueError as exc:
        raise KrakenError(INVALID_NONCE) from exc
    if nonce <= 0:
        raise KrakenError(INVALID_NONCE)
    return api_key, nonce


def signed_request(
    path: str, params: Mapping[str, str], api_key: str, secret_b64: str
) -> tuple[str, dict[str, str]]:
    """Body and headers of a signed private call (for tests and tools that are not ccxt)."""
    body = urlencode(dict(params))
    headers = {
        "API-Key": api_key,
        "API-Sign": signature(path, body, str(params["nonce"]), decode_secret(secret_b64)),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return body, headers
