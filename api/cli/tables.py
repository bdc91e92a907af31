"""Tables that fit the terminal: one line per row, the flexible columns cut
with an ellipsis (widest first) until the table fits; cells printed as
they are (no rich markup or emoji codes read into user data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

#: SIMPLE_HEAD without edges: one space on each side of every separator.
SEPARATOR = 3


def fitted_table(
    names: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    flexible: Mapping[str, int],
    title: str | None = None,
) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, limit in zip(names, _limits(names, rows, width, flexible), strict=True):
        table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=limit)
    for row in rows:
        # Text, not markup: a user agent like "[bold]" or an IPv6 address
        # like "::1234:" (an emoji code) is printed as it is.
        table.add_row(*(Text(cell) for cell in row))
    return table


def _limits(
    names: Sequence[str], rows: Sequence[Sequence[str]], width: int, flexible: Mapping[str, int]
) -> list[int | None]:
    """A maximum width per column (None: its own) so the table fits ``width``:
    the flexible columns (name: the width never cut below) give up their
    width, the widest first."""
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(names)]
    excess = sum(widths) + SEPARATOR * (len(names) - 1) - width
    cut = [i for i, name in enumerate(names) if name in flexible]
    while excess > 0:
        can = [i for i in cut if widths[i] > flexible[names[i]]]
        if not can:
            break
        widest = max(can, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return [widths[i] if i in cut else None for i in range(len(names))]
