"""Every table the migrations manage, gathered in one MetaData, and what a
comparison of it with a database must know."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.postgresql.base import ischema_names

import session_ledger.api.users.schema
import session_ledger.ledger.schema
import session_ledger.projections.schema
import session_ledger.workers.schema
from session_ledger.ledger import audit_schema, digest_schema  # noqa: F401  (audit and digest tables)
from session_ledger.ledger.schema import POSTGRESQL_ONLY, Xid8

target_metadata = session_ledger.ledger.schema.metadata

# Reflection names xid8 columns after our type, so that autogenerate
# compares their type instead of warning that it does not know it.
ischema_names.setdefault("xid8", Xid8)

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_object(dialect: str) -> IncludeObject:
    """Alembic's ``include_object`` for a database of ``dialect``: leaves out
    the metadata's PostgreSQL-only objects on any other database."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if dialect == "postgresql" or reflected:
            return True
        return not getattr(obj, "info", {}).get(POSTGRESQL_ONLY, False)

    return include
