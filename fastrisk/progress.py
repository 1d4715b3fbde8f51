"""Step timing and progress lines for the command line: shown on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Steps:
    """Times named steps; prints ``label ... 1.23 s`` to stderr when it is a terminal (or ``force``)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.show = not quiet and self.stream.isatty()
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, label: str):
        if self.show:
            self.stream.write(f"  {label} ...")
            self.stream.flush()
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.timings[label] = elapsed
        if self.show:
            self.stream.write(f" {elapsed:.2f} s\n")
            self.stream.flush()
