"""The one place that talks to upstream providers (panels speaking the API v2 convention).

    call(url, key, action, params=None, idempotency_key=None, timeouts=None) -> decoded JSON
    request(...) -> Reply(data, serva)     # the same, plus whether the provider is a Serva

A call is a form-encoded POST of `key`, `action` and the action's parameters (a dict value
becomes PHP-style `name[sub]=…` pairs, a list `name[]=…`), through one pooled, thread-safe
urllib3 PoolManager per process, with explicit connect and read timeouts (settings
SERVA_PROVIDER_CONNECT_TIMEOUT / SERVA_PROVIDER_READ_TIMEOUT, or `timeouts=(connect, read)`)
and no automatic retries: whether to try again is the caller's decision, made from the
exception's class, which says what is known about the request:

    ProviderError               base class; `str()` is a short message safe to keep for the operator
    ├── NotSent                 nothing reached the provider (connection refused, connect timeout,
    │                           name resolution): safe to send again
    ├── OutcomeUnknown          sent, but no usable answer (read timeout, connection reset after
    │                           sending, a reply that is not JSON): the provider may have acted
    │   └── HttpError           an HTTP status other than 200 (`.status`), with no refusal in its
    │                           body: a 5xx may come after the provider stored the order, a 502
    │                           from a proxy whose upstream committed (`.serva`: the reply came
    │                           from a Serva, which replays its first answer to a repeated key)
    └── Refused                 the provider answered {"error": "..."} (`.message`, its own words)

JSON numbers with a fraction are decoded as Decimal (a rate like 0.0015 stays exact).
URLs `sim://…` go to the built-in simulated provider (`simulated`, beside this module) without
HTTP.
The key is a secret: it is sent, never logged, never part of an exception's message.
"""
import json
import os
import threading
from collections import namedtuple
from decimal import Decimal

import urllib3
from flask import current_app, has_app_context
from urllib3.exceptions import (ConnectTimeoutError, HTTPError as Urllib3Error, NameResolutionError,
                                NewConnectionError, ProtocolError, ReadTimeoutError)

from . import simulated

DEFAULT_TIMEOUTS = (5.0, 30.0)
SERVA_HEADER = "x-serva-request-id"  # every Serva response carries it (docs/CONTRACT.md, Transport)
USER_AGENT = "Serva-provider-client/1"
MAX_REPLY_BYTES = 16 * 1024 * 1024
REPLY_KEPT = 4096  # of a failed call's reply, for the attempts (which keep less, key masked)

Reply = namedtuple("Reply", "data serva")


class ProviderError(Exception):
    """A call that did not give a usable answer. `status` and `reply`: the HTTP status and the
    start of the reply's text (REPLY_KEPT characters), when a reply came (None otherwise), for
    the hand-over's attempts (fulfilment.attempts masks the key in them)."""
    status = None
    reply = None


class NotSent(ProviderError):
    """Nothing was sent: the connection could not be made."""


class OutcomeUnknown(ProviderError):
    """The request was (or may have been) sent, and no usable answer came back."""


class HttpError(OutcomeUnknown):
    """An HTTP error status: sent, and no answer that says what the provider did."""

    def __init__(self, status: int, serva: bool = False):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.serva = serva


class Refused(ProviderError):
    """The provider's own `{"error": ...}` answer."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


_pool = None
_pool_pid = None
_pool_lock = threading.Lock()


def _manager():
    """The process's pool (made again after a fork: sockets are not shared across processes)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        with _pool_lock:
            if _pool is None or _pool_pid != os.getpid():
                _pool = urllib3.PoolManager(num_pools=32, maxsize=32, block=False, retries=False)
                _pool_pid = os.getpid()
    return _pool


def configured_timeouts():
    if has_app_context():
        config = current_app.config
        return (config.get("PROVIDER_CONNECT_TIMEOUT", DEFAULT_TIMEOUTS[0]),
                config.get("PROVIDER_READ_TIMEOUT", DEFAULT_TIMEOUTS[1]))
    return DEFAULT_TIMEOUTS


def form_fields(params: dict) -> list:
    """{"fields": {"player_id": 1}} -> [("fields[player_id]", "1")] (what PHP clients send)."""
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict):
            pairs += [(f"{name}[{sub}]", str(item)) for sub, item in value.items()]
        elif isinstance(value, (list, tuple)):
            pairs += [(f"{name}[]", str(item)) for item in value]
        else:
            pairs.append((name, str(value)))
    return pairs


def request(url: str, key: str, action: str, params=None, idempotency_key=None,
            timeouts=None) -> Reply:
    params = params or {}
    if url.startswith("sim://"):
        data = simulated.answer(url, key, action, params)
        if isinstance(data, dict) and "error" in data:
            raise _with_reply(Refused(str(data["error"])[:255]), None,
                              json.dumps(data, default=str)[:REPLY_KEPT])
        return Reply(data, True)
    connect, read = timeouts or configured_timeouts()
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    fields = [("key", key), ("action", action)] + form_fields(params)
    try:
        response = _manager().request_encode_body(
            "POST", url, fields=fields, encode_multipart=False, headers=headers,
            timeout=urllib3.Timeout(connect=connect, read=read), retries=False,
            preload_content=False, redirect=False)
    except (ConnectTimeoutError, NewConnectionError, NameResolutionError) as error:
        raise NotSent(_reason("connection failed", error)) from None
    except ReadTimeoutError:
        raise OutcomeUnknown("no reply within the read timeout") from None
    except (ProtocolError, Urllib3Error, OSError) as error:
        # urllib3 raises ConnectTimeoutError/NewConnectionError for every failure before the
        # request went out; anything else happened while or after sending.
        raise OutcomeUnknown(_reason("connection broken", error)) from None
    try:
        try:
            body = response.read(MAX_REPLY_BYTES + 1, decode_content=True)
        except ReadTimeoutError:
            raise OutcomeUnknown("the reply stopped within the read timeout") from None
        except (ProtocolError, Urllib3Error, OSError) as error:
            raise OutcomeUnknown(_reason("the reply broke off", error)) from None
    finally:
        response.release_conn()
    serva = SERVA_HEADER in response.headers
    if len(body) > MAX_REPLY_BYTES:
        raise OutcomeUnknown("the reply is too large")
    try:
        data = json.loads(body, parse_float=Decimal)  # rates stay exact
    except (ValueError, RecursionError):
        data = None
    text = body[:REPLY_KEPT].decode("utf-8", "replace")
    if response.status != 200:
        if isinstance(data, dict) and isinstance(data.get("error"), str) \
                and 400 <= response.status < 500 and response.status != 429:
            raise _with_reply(Refused(data["error"][:255]), response.status, text)
        raise _with_reply(HttpError(response.status, serva), response.status, text)
    if data is None:
        raise _with_reply(OutcomeUnknown("the reply is not JSON"), response.status, text)
    if isinstance(data, dict) and "error" in data:
        raise _with_reply(Refused(str(data["error"])[:255]), response.status, text)
    return Reply(data, serva)


def _with_reply(error: ProviderError, status, text) -> ProviderError:
    error.status, error.reply = status, text
    return error


def call(url: str, key: str, action: str, params=None, idempotency_key=None, timeouts=None):
    """The decoded JSON of a successful answer; a ProviderError otherwise."""
    return request(url, key, action, params, idempotency_key, timeouts).data


def _reason(what: str, error) -> str:
    """A short cause without the URL's query or anything else the error may quote."""
    cause = type(getattr(error, "reason", None) or error).__name__
    return f"{what} ({cause})"
