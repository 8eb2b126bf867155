"""Structured logs on stderr (stdout stays clean for ``--json`` output), JSON when asked.

Logs travel further than any other output (terminals, files, aggregators, bug reports), so they
are the likeliest place for an API key to leak. Redaction therefore happens inside the logging
pipeline, not at call sites: every event is scrubbed before it is rendered, by key
(``api_key=...``), by shape (PEM blocks, ``Bearer ...``, ``secret=...`` inside text) and by
value (every secret the application registered with :func:`register_secret`, wherever it
appears: event text, fields, nested containers, exception text). The rendered line is scrubbed a
second time for registered values, so an object whose ``repr`` embeds a key cannot slip through.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words everywhere; no real key is this short

# key names whose values are secrets, compared without case, "_" or "-"
_SECRET_KEY_PARTS = (
    "apikey",
    "apisecret",
    "secret",
    "password",
    "passphrase",
    "token",
    "privatekey",
    "authorization",
    "signature",
)
# keys the pipeline itself writes: never masked by name
_RESERVED_KEYS = frozenset({"event", "level", "timestamp", "logger", "exception", "stack"})
_FIRST_KEYS = (
    "timestamp",
    "level",
    "event",
    "logger",
    "strategy_id",
    "order_id",
    "client_order_id",
    "risk_level",
)

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/]+=*")
_KEY_VALUE = re.compile(
    r"(?i)((?:api[_-]?key|api[_-]?secret|secret|password|passphrase|access[_-]?token|refresh[_-]?token"
    r"|token|private[_-]?key|authorization|signature)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}\])]+)"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def register_secret(value: str | bytes | None) -> bool:
    """Mask every future occurrence of ``value`` in any log output. Call it for each key, secret
    and passphrase the application loads. Returns False (and registers nothing) for empty or
    very short values."""
    global _secret_re
    if value is None:
        return False
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if len(text) < MIN_SECRET_LEN:
        return False
    variants = {text, json.dumps(text)[1:-1], repr(text)[1:-1]}
    with _lock:
        _secrets.update(v for v in variants if len(v) >= MIN_SECRET_LEN)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))
    return True


def clear_registered_secrets() -> None:
    """For tests only: forget every registered value."""
    global _secret_re
    with _lock:
        _secrets.clear()
        _secret_re = None


def _is_secret_key(key: object) -> bool:
    k = str(key).lower().replace("_", "").replace("-", "")
    return any(part in k for part in _SECRET_KEY_PARTS)


def redact_registered(text: str) -> str:
    pat = _secret_re
    return pat.sub(MASK, text) if pat is not None else text


def redact_text(text: str) -> str:
    """Mask secrets in free text: registered values, PEM blocks, auth headers, ``key=value``."""
    text = redact_registered(text)
    if "-----BEGIN" in text:
        text = _PEM.sub(MASK, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets masked; containers are walked, other objects are judged
    by their ``repr`` (which is what a renderer would print)."""
    if value is None or isinstance(value, bool | int | float | Decimal | Fraction):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth > 32:
        return redact_text(repr(value))
    if isinstance(value, dict):
        return {
            k: (MASK if _is_secret_key(k) and v is not None else redact_value(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        if (
            isinstance(value, tuple | list)
            and len(value) == 2
            and isinstance(value[0], str)
            and _is_secret_key(value[0])
        ):  # a (name, value) pair: query parameters, header lists
            return (value[0], MASK) if isinstance(value, tuple) else [value[0], MASK]
        items = [redact_value(v, _depth + 1) for v in value]
        if isinstance(value, list):
            return items
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(items)
        return items
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}>"
    cleaned = redact_text(text)
    return value if cleaned == text else cleaned


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named fields and secret-looking values before rendering."""
    out: EventDict = {}
    for key, value in event_dict.items():
        if key not in _RESERVED_KEYS and _is_secret_key(key) and value is not None:
            out[key] = MASK
        else:
            out[key] = redact_value(value)
    return out


def _order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Put time, level, message and the trading context first, so JSON lines read alike."""
    out: EventDict = {k: event_dict[k] for k in _FIRST_KEYS if k in event_dict}
    out.update((k, v) for k, v in event_dict.items() if k not in out)
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal | Fraction):
        return str(obj)
    value = getattr(obj, "value", None)  # enums
    if isinstance(value, str | int):
        return value
    return repr(obj)


class _ScrubRendered:
    """Wraps the renderer: the final text is scrubbed once more for registered secrets."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        rendered = self._renderer(logger, method_name, event_dict)
        if isinstance(rendered, str):
            return redact_registered(rendered)
        return rendered


class RedactingFilter(logging.Filter):
    """The same scrubbing for standard-library logging (ccxt, urllib3, ...), which bypasses
    structlog: message, arguments and exception text are rendered and masked in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_stdlib_redaction(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Attach :class:`RedactingFilter` to the given handlers (default: the root logger's handlers
    and logging's last-resort handler), once each."""
    targets = list(handlers) if handlers is not None else [*logging.getLogger().handlers]
    if handlers is None and logging.lastResort is not None:
        targets.append(logging.lastResort)
    for h in targets:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


def processors(json_logs: bool) -> list[Processor]:
    """The processor chain: context, level, time, exception text, redaction, then rendering.

    Exceptions become plain text before redaction (never rich tracebacks with locals, which
    would print variables holding keys).
    """
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=_json_default)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
        _order_keys,
        _ScrubRendered(renderer),
    ]


def configure(json_logs: bool = False, level: int = logging.INFO, *, stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=processors(json_logs),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
    install_stdlib_redaction()
