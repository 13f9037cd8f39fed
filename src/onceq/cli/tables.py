"""Tables that stay readable in an 80-column terminal: one line per row, never folded.

Rich folds every column of a table wider than the terminal, so at 80 columns a job list
broke each task name and date over six lines. Here the fixed columns (ids, statuses,
times) keep their width, and only the elastic ones (names, errors) are cut, with an
ellipsis, to share what is left.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

MIN_ELASTIC = 8


def fitted(
    console: Console,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    elastic: set[str],
) -> Table:
    """A table of `rows` (cells in rich markup) as wide as the console at most."""
    natural = [
        max([len(h), *(Text.from_markup(row[i]).cell_len for row in rows)])
        for i, h in enumerate(headers)
    ]
    gaps = 3 * (len(headers) - 1) + 2  # padding and a (blank) rule between columns, edges
    widths = dict(zip(headers, natural, strict=True))
    fixed = sum(w for h, w in widths.items() if h not in elastic)
    shares = _share(console.width - fixed - gaps, {h: widths[h] for h in headers if h in elastic})
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in headers:
        if header in elastic:
            table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=shares[header])
        else:
            table.add_column(header, no_wrap=True, min_width=widths[header])
    for row in rows:
        table.add_row(*row)
    return table


def _share(room: int, wanted: dict[str, int]) -> dict[str, int]:
    """Widths for the elastic columns: what each needs if all fit, else at least
    MIN_ELASTIC each and the rest of `room` in proportion to what each lacks."""
    if sum(wanted.values()) <= room:
        return wanted
    floor = {h: min(w, MIN_ELASTIC) for h, w in wanted.items()}
    spare = max(room - sum(floor.values()), 0)
    lacking = {h: w - floor[h] for h, w in wanted.items()}
    total = sum(lacking.values()) or 1
    return {h: floor[h] + spare * lacking[h] // total for h in wanted}
