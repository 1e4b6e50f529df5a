"""Progress lines on stderr: redrawn in place on a terminal, every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Shows one changing status line.

    Args:
        stream: where to write (stderr by default, so stdout stays parseable).
        every_s: how often to print when the stream is not a terminal.
    """

    def __init__(self, stream: TextIO | None = None, every_s: float = 2.0) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._every_s = every_s
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            self._stream.write(f"\r\033[K{text}")
            self._stream.flush()
        elif force or now - self._last >= self._every_s:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last = now

    def done(self, text: str) -> None:
        if self._tty:
            self._stream.write(f"\r\033[K{text}\n")
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
