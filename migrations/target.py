"""Every table the migrations manage, gathered in one MetaData."""

from __future__ import annotations

import ledger.schema

target_metadata = ledger.schema.metadata
