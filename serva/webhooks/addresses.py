"""Where a webhook may go: `https` to public addresses only, so a partner cannot make Serva
call the operator's own network (metadata services, databases, admin pages: SSRF).

A name is resolved once, every address it gives is checked, and the delivery connects to an
address from that same answer (transport) — a second lookup could answer differently (DNS
rebinding). Forms that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96,
6to4 2002::/16) are judged by the address they embed; Teredo and local-use NAT64 are refused.
SERVA_WEBHOOK_ALLOW_PRIVATE (development, tests) allows `http` and any address."""
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


class DestinationError(ValueError):
    """A webhook URL Serva will not call; str() says why, for the partner."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # the name (or literal address) as in the URL: the Host header and TLS name
    port: int
    target: str  # path and query
    addresses: tuple  # the checked addresses, as resolved once


def getaddrinfo(host, port):
    """The system resolver (a test stubs this function to make a name resolve anywhere)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _embedded(address):
    """The IPv4 address an IPv6 form carries, or None."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal(address) -> str | None:
    """Why a webhook may not connect to `address` (an ipaddress object), or None if public."""
    inner = _embedded(address)
    if inner is not None:
        why = refusal(inner)
        return None if why is None else f"{address} embeds {inner}: {why}"
    if address.version == 6 and (address.teredo is not None or address in LOCAL_NAT64):
        return f"{address} is a tunnelled address"
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def parse(url: str, allow_private: bool):
    """(scheme, host, port, target) of a webhook URL, or DestinationError."""
    if not isinstance(url, str) or not url.strip():
        raise DestinationError("the URL is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise DestinationError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise DestinationError(f"not a URL: {error}") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise DestinationError("the URL must start with https://")
    if parts.username or parts.password:
        raise DestinationError("the URL may not carry a user name or password")
    if not parts.hostname:
        raise DestinationError("the URL has no host")
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), target


def resolve(url: str, allow_private: bool) -> Destination:
    """The URL's destination with its addresses resolved once and checked: DestinationError
    when the URL is not allowed, the name does not resolve, or any address is not public."""
    scheme, host, port, target = parse(url, allow_private)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            found = [ipaddress.ip_address(info[4][0].split("%")[0])
                     for info in getaddrinfo(host, port)]
        except (OSError, UnicodeError, ValueError) as error:
            raise DestinationError(f"{host} does not resolve: {error}") from None
        if not found:
            raise DestinationError(f"{host} does not resolve")
    if not allow_private:
        for address in found:
            why = refusal(address)
            if why is not None:
                raise DestinationError(f"{host} is not allowed: {why}")
    unique = tuple(dict.fromkeys(str(address) for address in found))
    return Destination(scheme, host, port, target, unique)
