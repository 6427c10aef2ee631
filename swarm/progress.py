"""Progress of long, user-visible work: a bar on a terminal, a plain line now and then in a log.

tqdm redraws one line with carriage returns: right on a terminal, `\\r` fragments in a log
file (a server under systemd or docker, a launcher's log, `2> file`). So `progress_bar(...)`
gives a tqdm bar when stderr is a terminal, and otherwise a `LogProgress` that logs
"DESC: N/TOTAL UNIT (P%)" at INFO at most every `LOG_INTERVAL` seconds, and once when done.
Both take the same calls: iterate, `update(n)`, `set_postfix_str(text)`, `close()`, `with`.
`quiet_library_bars()` does the same for the bars of huggingface_hub and transformers
(off where stderr is no terminal).

Not here: what is measured (the callers), logging setup (`swarm.logs`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

LOG_INTERVAL = 10.0
"""Seconds between two progress lines in a log."""

logger = logging.getLogger(__name__)


def progress_bar(iterable: Iterable[T] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             unit_scale: bool = False, enabled: bool = True) -> Any:
    """A tqdm bar on a terminal, a `LogProgress` elsewhere, nothing shown when not `enabled`."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale)
    return LogProgress(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, enabled=enabled)


def quiet_library_bars() -> None:
    """Turns off huggingface_hub's and transformers' own tqdm bars when stderr is no terminal.

    Call before transformers is imported (it reads the setting once). An explicit
    HF_HUB_DISABLE_PROGRESS_BARS in the environment is left to win.
    """
    if sys.stderr.isatty():
        return
    from huggingface_hub import constants
    from huggingface_hub.utils.tqdm import disable_progress_bars

    if constants.HF_HUB_DISABLE_PROGRESS_BARS is None:
        disable_progress_bars()


class LogProgress(Generic[T]):
    """Progress as periodic INFO lines (see the module docstring)."""

    def __init__(self, iterable: Iterable[T] | None = None, *, desc: str, total: float | None = None,
                 unit: str = "it", unit_scale: bool = False, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic, interval: float = LOG_INTERVAL) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else _length(iterable)
        self.unit = unit
        self.unit_scale = unit_scale
        self.enabled = enabled
        self.n = 0.0
        self.postfix = ""
        self._clock = clock
        self._interval = interval
        self._began = clock()
        self._last = self._began
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("LogProgress made without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LogProgress[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Counts `n` more units done; logs a line when `LOG_INTERVAL` has passed since the last."""
        self.n += n
        now = self._clock()
        finished = bool(self.total) and self.n >= (self.total or 0)
        if now - self._last >= self._interval and not finished:  # `close` says the end
            self._last = now
            self._log(self.line())

    def set_postfix_str(self, text: str) -> None:
        """What is being done now, shown after the count."""
        self.postfix = text

    def close(self) -> None:
        """Logs the final line once (only after some work, so instant jobs stay silent)."""
        if self._closed:
            return
        self._closed = True
        if self.n > 0:
            self._log(f"{self.line()} in {self._clock() - self._began:.1f} s")

    def line(self) -> str:
        """'DESC: N/TOTAL UNIT (P%) [POSTFIX]'."""
        done = self._amount(self.n)
        count = f"{done}/{self._amount(self.total)} {self.unit}" if self.total else f"{done} {self.unit}"
        share = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {count}{share}{extra}"

    def _amount(self, value: float) -> str:
        if not self.unit_scale:
            return f"{value:g}"
        for prefix in ("", "k", "M", "G"):
            if abs(value) < 1000:
                return f"{value:.1f}{prefix}"
            value /= 1000
        return f"{value:.1f}T"

    def _log(self, text: str) -> None:
        if self.enabled:
            logger.info("%s", text)


def _length(iterable: Iterable[Any] | None) -> float | None:
    try:
        return float(len(iterable))  # type: ignore[arg-type]
    except TypeError:  # a generator: no total, counts only
        return None
