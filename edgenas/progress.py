"""Progress and log lines that read well where they land: a terminal, a notebook or a log file.

Library progress goes through the ``edgenas`` logger (modules log to ``edgenas.<module>``).
As Optuna does for its own, that logger has its own handler, writing the bare message to
whatever ``sys.stderr`` is at the time, at INFO, and does not propagate to the root logger;
an application that wants edgenas's lines elsewhere configures the ``edgenas`` logger (a
handler, a level, ``propagate = True``). Nothing here touches the root logger.

A progress bar is tqdm in a terminal or a notebook. When stderr is not a terminal
(``make demo > log``, CI, a scheduler's log), tqdm's carriage-return frames would fill the
file (a demo log was 64 KB of them); instead a :class:`LogLine` writes one line when the
bar finishes: what it counted, how long it took, its last figures. A long bar also says it
is alive: a line once a minute has passed since its last one, or once it has advanced
10 % and 10 seconds have passed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LogLine", "logger", "progress"]


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record is emitted (test capture, redirection)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _library_logger() -> logging.Logger:
    log = logging.getLogger("edgenas")
    if not log.handlers:
        log.addHandler(_CurrentStderr())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


logger = _library_logger()
_bars = logging.getLogger("edgenas.progress")


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
    """The part of tqdm's interface edgenas uses; logs one line when closed, and while it runs long."""

    ALIVE_SECONDS = 60.0  # a line at least this often while items keep coming
    STEP_SHARE, STEP_SECONDS = 0.1, 10.0  # or after this share of the total, if this long has passed

    def __init__(self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self._last_time = time.time()
        self._last_n = 0
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        since = now - self._last_time
        stepped = bool(self.total) and (self.n - self._last_n) >= self.STEP_SHARE * self.total
        if since >= self.ALIVE_SECONDS or (stepped and since >= self.STEP_SECONDS):
            if self.total is None or self.n < self.total:
                self._log(running=True)
            self._last_time, self._last_n = now, self.n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def refresh(self) -> None:
        """Nothing to redraw: lines are written as the bar advances and when it closes."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._log(running=False)

    def _log(self, *, running: bool) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        extra = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        state = "so far" if running else "in"
        _bars.info(
            f"{self.desc}: {self.n}{total} {self.unit} {state} {time.time() - self.start:.1f} s"
            + (f" ({extra})" if extra else "")
        )

    def __enter__(self) -> LogLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
