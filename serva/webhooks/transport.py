"""One webhook POST to a destination whose addresses were checked (addresses.resolve): the
connection goes to a checked address itself, with the name as Host header and as TLS server
name (SNI and certificate check), so a name that resolves elsewhere a second time (DNS
rebinding) changes nothing. Timeouts: CONNECT_TIMEOUT to connect, TOTAL_TIMEOUT for the whole
exchange; redirects are not followed (a 3xx is a failed attempt, its Location never called);
a 2xx whose body is cut short counts as failed too (the receiver de-duplicates the retry).

Connections are kept open between deliveries to the same checked address (Keep-Alive), so a
busy endpoint costs one TCP and TLS handshake per connection instead of per event: the pools
are keyed by the address as well as the name, so a connection is only ever reused for the
address that this attempt's check returned."""
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error, NewConnectionError, ConnectTimeoutError

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 64 * 1024  # read (to see the answer complete), then dropped
MAX_RETRY_AFTER = 24 * 3600
USER_AGENT = "Serva-webhooks/1"
POOLS_KEPT = 64  # destinations whose open connections are kept (the least recently used go)
CONNECTIONS_PER_DESTINATION = 4  # kept open per destination (more may be open while busy)

_pools = OrderedDict()
_pools_lock = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, None when none arrived
    error: str | None  # why the attempt failed, None on success
    retry_after: int | None  # seconds the receiver asked to wait (429, 503)
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def retry_after(value) -> int | None:
    """Retry-After in seconds (a number of seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(int(value), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, min(int(moment.timestamp() - time.time()), MAX_RETRY_AFTER))


def _pool(destination, address):
    """The kept pool of connections to `address` for this destination (made when missing).
    A pool pushed out of the kept ones is not closed, since a delivery may be using it: its
    connections close when the last delivery using it lets go of it."""
    key = (destination.scheme, destination.host, destination.port, address)
    with _pools_lock:
        pool = _pools.pop(key, None) or _new_pool(destination, address)
        _pools[key] = pool
        if len(_pools) > POOLS_KEPT:
            _pools.popitem(last=False)
    return pool


def _new_pool(destination, address):
    options = {"port": destination.port, "retries": False, "block": False,
               "maxsize": CONNECTIONS_PER_DESTINATION}
    if destination.scheme == "https":
        return urllib3.HTTPSConnectionPool(address, server_hostname=destination.host,
                                           assert_hostname=destination.host,
                                           cert_reqs="CERT_REQUIRED", **options)
    return urllib3.HTTPConnectionPool(address, **options)


def _host_header(destination) -> str:
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    default = 443 if destination.scheme == "https" else 80
    return host if destination.port == default else f"{host}:{destination.port}"


def _exchange(destination, address, headers, body, deadline):
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=max(0.001, deadline - time.monotonic()))
    response = _pool(destination, address).urlopen(
        "POST", destination.target, body=body, headers=headers, timeout=timeout, redirect=False,
        preload_content=False, assert_same_host=False)
    complete = False
    try:
        received = 0
        for chunk in response.stream(8192):
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                break  # the status is known; the rest does not matter
            if time.monotonic() > deadline:
                raise TimeoutError(f"the answer took longer than {TOTAL_TIMEOUT:g} s")
        else:
            complete = True
    finally:
        if not complete:  # an answer left unread: its connection cannot carry another request
            response.close()
        response.release_conn()
    return response


def send(destination, headers: dict, body: bytes) -> Outcome:
    """POST `body` to the destination (each checked address in turn until one connects)."""
    started = time.monotonic()
    deadline = started + TOTAL_TIMEOUT
    headers = {"Host": _host_header(destination), "User-Agent": USER_AGENT,
               "Content-Type": "application/json", **headers}
    error = "no address to connect to"
    for address in destination.addresses:
        try:
            response = _exchange(destination, address, headers, body, deadline)
        except (NewConnectionError, ConnectTimeoutError) as failure:
            error = f"could not connect: {_short(failure)}"
            continue  # nothing was sent: the next address may answer
        except (Urllib3Error, OSError) as failure:
            return _outcome(started, None, _short(failure))
        status = response.status
        if 200 <= status < 300:
            return _outcome(started, status, None)
        wait = retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        return _outcome(started, status, f"HTTP {status}", wait)
    return _outcome(started, None, error)


def _outcome(started, status, error, wait=None) -> Outcome:
    return Outcome(status, error, wait, int((time.monotonic() - started) * 1000))


def _short(error) -> str:
    """An exception as one short line (urllib3 nests the cause in its message)."""
    text = " ".join(str(error).split()) or error.__class__.__name__
    return text if len(text) <= 200 else text[:199] + "…"
