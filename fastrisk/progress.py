"""Step timing and progress lines for the command line: shown on a terminal, silent otherwise.

Every step is timed (the times go into ``summary.json``). On a terminal a step draws one live line,
``  account risk  120,000/200,000 accounts  1.2 s``, redrawn a few times a second by a ticker thread so that
a long compiled call (which reports nothing until it returns) still shows that it is alive; when the step
ends the line is finished with its total and time. Work that comes in pieces (partitions, tables, report
sections) calls ``progress.advance(n)``; a step that is one compiled call advances once, at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

_REDRAW_S = 0.2


class Progress:
    """The live state of one step: units done out of ``total`` (``None`` when unknown in advance)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self._stream = stream            # None: draw nothing
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.seconds = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done (callable from worker threads)."""
        with self._lock:
            self.done += n

    __call__ = advance  # a Progress is also a plain ``callback(n)`` for code that takes one

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def _counts(self) -> str:
        if self.total is None:
            return f"{self.done:,} {self.unit}".rstrip() if self.done else ""
        return f"{self.done:,}/{self.total:,} {self.unit}".rstrip()

    def _draw(self, end: str = "") -> None:
        counts = self._counts()
        line = f"  {self.label}" + (f"  {counts}" if counts else "") + f"  {self.elapsed:.1f} s"
        # \r + erase-line: redraw in place on a terminal.
        self._stream.write(f"\r\x1b[K{line}{end}")
        self._stream.flush()

    def _start_ticker(self) -> None:
        if self._stream is None:
            return
        self._draw()

        def tick():
            while not self._stop.wait(_REDRAW_S):
                with self._lock:
                    self._draw()

        self._ticker = threading.Thread(target=tick, name="fastrisk-progress", daemon=True)
        self._ticker.start()

    def _finish(self, outcome: str | None) -> None:
        self.seconds = self.elapsed  # the step's time, fixed before any drawing
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._stream is None:
            return
        if outcome is None and self.total is not None:
            self.done = self.total  # a finished step has done all its units, whether or not it counted them
        counts = self._counts()
        line = f"  {self.label}" + (f"  {counts}" if counts else "") + f"  {self.seconds:.2f} s"
        self._stream.write(f"\r\x1b[K{line}" + (f"  ({outcome})" if outcome else "") + "\n")
        self._stream.flush()


class Steps:
    """Times named steps; draws progress lines on ``stream`` (stderr) when it is a terminal and not ``quiet``.

    ``timings`` maps each finished step's name to its seconds (interrupted or failed steps are not recorded).
    """

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.show = not quiet and _isatty(self.stream)
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, label: str | None = None, total: int | None = None, unit: str = ""):
        """Time the block as step ``name``; yields its :class:`Progress` (``advance(n)`` as work gets done)."""
        progress = Progress(label or name, total, unit, self.stream if self.show else None)
        progress._start_ticker()
        try:
            yield progress
        except KeyboardInterrupt:
            progress._finish("interrupted")
            raise
        except BaseException:
            progress._finish("failed")
            raise
        progress._finish(None)
        self.timings[name] = self.timings.get(name, 0.0) + progress.seconds

    def note(self, message: str) -> None:
        """A line between steps (e.g. why the report is not drawn), on a terminal only."""
        if self.show:
            self.stream.write(f"  {message}\n")
            self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like objects without a terminal
        return False
