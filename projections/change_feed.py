"""Every change, read from the ledger: what a PostgreSQL process's
:class:`~projections.freshness.CacheFreshness` hears.

Writers no longer NOTIFY inside their transactions (PostgreSQL's
notification queue lock would serialise every commit, see
``projections.runner.NotifyAfterCommit``): a notification is only a
wake-up, sent after commit, and may be lost (a writer that dies between its
commit and its NOTIFY). So the feed reads the ledger itself, on every
wake-up and every POLL_INTERVAL.

A *pass* reads every row after the feed's mark in commit-safe order
(ledger.horizon), page by page, **without** the horizon's guard: the rows
below the horizon are final and move the mark; the rows above it are heard
as well (a long transaction elsewhere must not delay what committed after
it) and read again by the next pass, which finds the ones that were still
in flight among them. Every append committed before a pass began is heard
by the end of that pass. A pass that would read more than MAX_PAGES pages
(a long transaction holding the horizon back while thousands of appends
commit above it) leaves the feed ``behind``: Redis is not believed until a
pass completes again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.freshness import CacheFreshness

log = logging.getLogger(__name__)

PAGE = 1000
MAX_PAGES = 4
#: How often the feed reads when no wake-up came.
POLL_INTERVAL = 0.25

_t = events_table.c


class LedgerChanges:
    """Reads the ledger after ``mark`` and tells ``freshness`` of every change."""

    def __init__(self, engine: AsyncEngine, freshness: CacheFreshness, mark: Mark) -> None:
        self.engine = engine
        self.freshness = freshness
        #: Every row at or before it has been heard, and is final.
        self.mark = mark
        self.passes = 0

    async def read_pass(self) -> int:
        """One pass (see the module docstring); returns the rows heard."""
        pg = horizon.postgres(self.engine)
        query = select(
            horizon.mark_column(pg=pg),
            _t.position,
            _t.stream_id,
            _t.stream_version,
            horizon.horizon_value(pg=pg),
        )
        after, safe, heard = self.mark, True, 0
        freshness = self.freshness
        for _ in range(MAX_PAGES):
            page = horizon.follow(query, after, pg=pg, safe=False).limit(PAGE)
            async with self.engine.connect() as conn:
                rows: list[Any] = list((await conn.execute(page)).all())
            for xid, position, stream_id, version, h in rows:
                mark = (int(xid), int(position))
                freshness.heard(mark, [(stream_id, version)])
                # The mark moves over final rows only, and only while every
                # row before them was final too.
                safe = safe and (h is None or xid < h)
                if safe:
                    self.mark = mark
            heard += len(rows)
            if len(rows) < PAGE:
                freshness.behind = False
                freshness.read_through()
                self.passes += 1
                return heard
            after = (int(rows[-1][0]), int(rows[-1][1]))
        if not freshness.behind:
            log.warning(
                "change feed: more than %d events committed above the horizon "
                "(a long transaction?); not believing Redis until it ends",
                PAGE * MAX_PAGES,
            )
        freshness.behind = True
        return heard
