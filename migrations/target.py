"""Every table the migrations manage, gathered in one MetaData."""

from __future__ import annotations

import api.users.schema  # noqa: F401  (registers the user store tables)
import ledger.schema
import projections.schema  # noqa: F401  (registers the projection tables)
import workers.schema  # noqa: F401  (registers the worker heartbeat table)
from ledger import audit_schema, digest_schema  # noqa: F401  (audit and digest tables)

target_metadata = ledger.schema.metadata
