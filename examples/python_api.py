"""Sessions from Python, without HTTP: sign in on two devices, validate,
list, update, re-authenticate, revoke the other device, sign out, and read
the history back from the ledger. Run it (a SQLite file in a temporary
directory; the tests run it too)::

    .venv/bin/python examples/python_api.py
"""

import asyncio
import tempfile

from session_ledger.api.bootstrap import build
from session_ledger.ledger.audit import AuditLog
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.service import RequestContext

LAPTOP = RequestContext(
    ip="203.0.113.5",
    user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/120.0.0.0 Safari/537.36",
)
PHONE = RequestContext(
    ip="198.51.100.7",
    user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
)


async def main(database_url: str) -> None:
    container = await build(load_settings(database_url=database_url), migrate=True)
    ledger = container.ledger
    try:
        # Sign-in: the token exists only here; send it to the client (a cookie).
        laptop, token = await ledger.create_session(
            "user-1", LAPTOP, remember_me=True, fields={"theme": "dark"}
        )
        phone, phone_token = await ledger.create_session("user-1", PHONE)

        # Every request: validate. None means no live session (sign in again).
        validated = await ledger.get_session(token, LAPTOP)
        assert validated is not None
        if validated.rotated:  # the token rotated on refresh: hand the new one out
            token = validated.token
        ledger.require_fresh(validated.session)  # SessionNotFreshError when too old

        for session in await ledger.list_sessions("user-1", current_session_id=laptop.id):
            mark = " (this device)" if session.current else ""
            print(f"{session.device}, {session.ip}, active {session.last_active_at:%H:%M}{mark}")

        await ledger.update_session(token, {"theme": "light"})
        await ledger.reauthenticate(token, LAPTOP)  # after asking for the password again

        # Revoke the phone by its id (or by a raw token, as BetterAuth's
        # revoke-session takes it: revoke_session_by_id_or_token; also
        # revoke_sessions, revoke_other_sessions, revoke_all_sessions): it is
        # refused at once, wherever it shows up.
        await ledger.revoke_session("user-1", phone.id, LAPTOP)
        assert await ledger.get_session(phone_token, PHONE) is None

        await ledger.sign_out(token, LAPTOP)
        assert await ledger.get_session(token, LAPTOP) is None

        # Everything that happened is in the ledger.
        history = await AuditLog(container.engine).user_history("user-1")
        for entry in history.items:
            why = f" ({entry.reason})" if entry.reason else ""
            print(f"{entry.recorded_at:%H:%M:%S} {entry.type}{why} session {entry.session_id}")
    finally:
        await container.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(f"sqlite+aiosqlite:///{directory}/example.db"))
