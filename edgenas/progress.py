"""Progress that reads well where it lands: a tqdm bar in a terminal, one line per bar in a log file.

When stderr is not a terminal (``make demo > log``, CI, a scheduler's log), tqdm's
carriage-return frames fill the file (a demo log was 64 KB of them); instead each bar
writes one line when it finishes: what it counted, how long it took, its last figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LogLine", "progress"]


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
) -> tqdm | LogLine:
    """A tqdm bar on a terminal or in a notebook (or a disabled one); a :class:`LogLine` when stderr is a file."""
    if disable or sys.stderr.isatty() or "ipykernel" in sys.modules:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return LogLine(iterable, total=total, desc=desc, unit=unit)


class LogLine:
    """The part of tqdm's interface edgenas uses; writes one line to stderr when closed."""

    def __init__(self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = time.time()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def refresh(self) -> None:
        """Nothing to redraw: the line is written when the bar closes."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        total = f"/{self.total}" if self.total is not None else ""
        extra = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        print(
            f"{self.desc}: {self.n}{total} {self.unit} in {time.time() - self.start:.1f} s"
            + (f" ({extra})" if extra else ""),
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> LogLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
