"""Tables of the built-in user store, registered on the ledger's metadata so
that migrations/0003_users.py is checked against them (no drift)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from session_ledger.ledger.schema import metadata

TS = DateTime(timezone=True)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    # Always stored lower-cased, so a plain unique constraint is case-insensitive.
    Column("email", String(320), nullable=False),
    Column("email_verified", Boolean, nullable=False),
    Column("image", String(2048), nullable=True),
    Column("roles", JSON, nullable=False),
    Column("password_hash", String(256), nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("email"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("account_id", String(255), nullable=False),
    # Fernet ciphertexts (urlsafe base64), never plaintext.
    Column("access_token", Text, nullable=True),
    Column("refresh_token", Text, nullable=True),
    Column("id_token", Text, nullable=True),
    Column("token_type", String(64), nullable=True),
    Column("scope", String(1024), nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("provider_id", "account_id"),
    Index(None, "user_id"),
)
