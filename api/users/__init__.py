"""The built-in user store: users with argon2id passwords and linked provider
accounts whose tokens are encrypted at rest. Host applications can replace it
with any :class:`ledger.ports.UserStore`."""
