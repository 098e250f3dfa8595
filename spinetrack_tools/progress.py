"""Progress bars on stderr for long work (shown only on a terminal)."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, total=total, description=description, console=Console(stderr=True), transient=True)
