"""Tables of the audit layer (registered on the ledger's MetaData).

``audit_ips`` indexes every event that saw a session at an IP address
(SessionCreated, and SessionTouched with an ip). It is maintained inline by
projections.audit_ips, in the append transaction, and read by ledger.audit.

Network (CIDR) queries: ``ip_key`` is the address as a fixed-width,
family-tagged hex string (``4:0a000001`` for 10.0.0.1, ``6:`` + 32 hex digits
for IPv6; IPv4-mapped IPv6 addresses are stored as IPv4). Hex of a
fixed-width big-endian number sorts like the number, so every network is one
contiguous ``ip_key`` range, answered by a B-tree range scan on both
PostgreSQL and SQLite with no per-row matching in Python. (PostgreSQL's
``inet`` type with ``<<=`` would do on PostgreSQL alone; one portable
encoding keeps a single query for both databases.) Values that are not IP
addresses keep ``ip_key`` NULL: they are findable by exact text only.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import Column, DateTime, Index, String, Table

from session_ledger.ledger.schema import Position, events, metadata

audit_ips = Table(
    "audit_ips",
    metadata,
    # The position of the event that saw the address (one row per event).
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("session_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("ip", String(1024), nullable=False),
    Column("ip_key", String(34), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # A network is a range of ip_key; position second so that one address's
    # sightings come out in ledger order straight from the index.
    Index(None, "ip_key", "position"),
)

#: Audit scans of one event type in ledger order (revocations, the sessions
#: created up to an instant for point-in-time views). Attached to
#: ledger_events; created by migration 0006.
events_type_position = Index("ix_ledger_events_type_position", events.c.type, events.c.position)


# ------------------------------------------------------------ ip_key encoding

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_key(text: str) -> str | None:
    """The sortable key of an address (see the module doc); None if not an IP."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _key(address)


def network_key_range(network: IpNetwork) -> tuple[str, str]:
    """The inclusive ``ip_key`` range of every address in ``network``."""
    return _key(network.network_address), _key(network.broadcast_address)


def _key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return f"4:{int(address):08x}"
    return f"6:{int(address):032x}"
