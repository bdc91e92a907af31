"""The pure domain: what a session is and how it may change.

* :mod:`.events`: the event catalogue (frozen pydantic models);
* :mod:`.state`: a session's state, ``evolve`` and ``fold``;
* :mod:`.decide`: the commands and ``decide`` (the state machine's rules);
* :mod:`.rules`: the rules every layer asks (refresh due, freshness, expiry,
  session ids), each in one place;
* :mod:`.policy`: the :class:`~.policy.SessionPolicy` (a plain value;
  :mod:`session_ledger.ledger.config` loads one from settings);
* :mod:`.values`: what text and field values are accepted;
* :mod:`.tokens`: session tokens, their hashes, HMAC signing;
* :mod:`.errors`: the typed errors.

No I/O and no clock of its own. Only the standard library and pydantic:
an import-linter contract (``pyproject.toml``) refuses SQLAlchemy, the
database drivers, redis, pydantic-settings, FastAPI and Starlette here.
"""
