"""Every table the migrations manage, gathered in one MetaData."""

from __future__ import annotations

import session_ledger.api.users.schema
import session_ledger.ledger.schema
import session_ledger.projections.schema
import session_ledger.workers.schema
from session_ledger.ledger import audit_schema, digest_schema  # noqa: F401  (audit and digest tables)

target_metadata = session_ledger.ledger.schema.metadata
