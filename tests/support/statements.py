"""Which statements an engine sends, as its statement observers see them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def statement_verbs(engine: AsyncEngine) -> Iterator[list[str]]:
    """The first word (upper case) of every statement ``engine`` sends
    inside the block, in order."""
    verbs: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verbs.append(statement.split()[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield verbs
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
