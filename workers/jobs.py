"""The worker's job names. A module of its own, without imports, so the
CLI can offer them (``worker --only``) without loading the scheduler."""

from __future__ import annotations

EXPIRY = "expiry"
PROJECTOR = "projector"
DIGEST = "digest"
JOBS = (EXPIRY, PROJECTOR, DIGEST)
