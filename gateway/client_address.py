"""Who is on the other end of a request: the address failed authentications are counted against.

The socket peer is the client, unless the peer is one of `FLEXSF_TRUSTED_PROXIES`: then the client is the right-most
address of `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it was called from; whatever
stands left of the first untrusted address was written by the client and proves nothing). A header that cannot be
read there leaves the last trusted hop as the client, so a forged header never spreads one client over many keys.

IPv6 clients are counted per /64 (`limiter_key`): one host usually holds a whole /64 and could otherwise change
address per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"


def trusted_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def client_address(scope: Scope, networks: tuple[IPNetwork, ...] = ()) -> IPAddress | None:
    """The client's address (None when the server gave no peer, as an in-process test client may)."""
    peer = scope.get("client")
    address = _address(str(peer[0])) if peer else None
    if address is None or not networks or not _trusted(address, networks):
        return address
    forwarded = ",".join(
        value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == b"x-forwarded-for"
    )
    for entry in reversed([part for part in forwarded.split(",") if part.strip()]):
        hop = _address(entry)
        if hop is None:
            return address  # unreadable: the last trusted hop answers for it
        if not _trusted(hop, networks):
            return hop
        address = hop
    return address  # every hop is a trusted proxy: the left-most one


def limiter_key(address: IPAddress | None) -> str:
    """What failures are counted under: the IPv4 address, or the IPv6 address's /64."""
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
