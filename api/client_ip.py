"""The client's IP address: the socket peer, or ``X-Forwarded-For`` only when
the peer is a trusted proxy (``settings.trusted_proxies``: addresses or CIDRs).

X-Forwarded-For is read right to left, skipping trusted proxies: the first
untrusted hop is the client. Anything a client could have written further
left is ignored, so a client cannot spoof its address past our proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from starlette.requests import HTTPConnection

from session_ledger.ledger.domain.errors import ConfigError

Network = IPv4Network | IPv6Network


class ClientIp:
    __slots__ = ("_trusted",)

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        try:
            self._trusted: tuple[Network, ...] = tuple(
                ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies
            )
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def of(self, conn: HTTPConnection) -> str | None:
        peer = conn.client.host if conn.client else None
        if peer is None or not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for v in conn.headers.getlist("x-forwarded-for") for h in v.split(",")]
        for hop in reversed(hops):
            if not _is_ip(hop):
                return peer  # garbage in the chain: do not guess, use what we know
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
