"""Keys pressed while ``top`` runs: the terminal in cbreak mode, read without blocking the refresh.

Only the terminal's mode changes (no echo, no line buffering; Ctrl-C still interrupts), and it is
restored on exit whatever happens. Without a terminal on stdin (a pipe, Windows) no key is read and
:meth:`KeyReader.wait` just sleeps: Ctrl-C still quits.
"""

from __future__ import annotations

import os
import select
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["KeyReader"]


class KeyReader:
    """``with KeyReader() as keys: key = keys.wait(seconds)``: a key, or "" once ``seconds`` passed."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> KeyReader:
        try:
            import termios
            import tty

            fd = self._stream.fileno()
            if os.isatty(fd):
                self._saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                self._fd = fd
        except (ImportError, OSError, ValueError, AttributeError):
            self._fd = None  # no terminal to read keys from
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        self._fd = None

    @property
    def interactive(self) -> bool:
        return self._fd is not None

    def wait(self, seconds: float) -> str:
        """The next key pressed within ``seconds`` (a whole escape sequence counts as one), else ""."""
        if seconds <= 0:
            return ""
        if self._fd is None:
            time.sleep(seconds)
            return ""
        ready, _, _ = select.select([self._fd], [], [], seconds)
        if not ready:
            return ""
        data = os.read(self._fd, 32)
        return data.decode("utf-8", "replace") if data else ""
