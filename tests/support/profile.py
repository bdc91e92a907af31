"""How thorough a run is. The default profile (a developer's
``scripts/test.sh``) runs the slowest tests, those whose proof grows with
the number of generated examples or the size of the load, smaller; the
full profile (``--slow``, or ``SESSION_LEDGER_TEST_PROFILE=full``; what CI
runs) runs them at full size. Both prove the same properties: the full one
searches further."""

from __future__ import annotations

import os

ENV = "SESSION_LEDGER_TEST_PROFILE"


def full() -> bool:
    return os.environ.get(ENV) == "full"


def pick(default: int, full_size: int) -> int:
    """``default`` in the default profile, ``full_size`` in the full one."""
    return full_size if full() else default
