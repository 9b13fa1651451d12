"""A progress line for long jobs: done/total, rate, ETA. One line per update on a pipe or log,
rewritten in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Tracks work units (e.g. bytes) for the ETA and any number of named counters for rates."""

    def __init__(self, label: str, total: float, stream: TextIO | None = None, every: float = 1.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self.done = 0.0
        self.counters: dict[str, float] = {}
        self.start = self._last = time.monotonic()
        self._tty = self.stream.isatty()
        self._printed = ""

    def update(self, done: float, force: bool = False, **counters: float) -> None:
        """Add `done` units and counter increments; print if `every` seconds have passed."""
        self.done += done
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self._print(self.line(), final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        share = self.done / self.total if self.total else 1.0
        parts = [f"{self.label}: {share:6.1%}"]
        parts += [f"{value:,.0f} {name} ({value / elapsed:,.0f}/s)" for name, value in self.counters.items()]
        eta = elapsed * (1 - share) / share if share > 0 else float("inf")
        parts.append(f"elapsed {_human(elapsed)}" + (f", ETA {_human(eta)}" if share < 1 and share > 0 else ""))
        return " | ".join(parts)

    def finish(self) -> float:
        """Print the final line; returns the elapsed seconds."""
        self._print(self.line(), final=True)
        return time.monotonic() - self.start

    def _print(self, text: str, final: bool) -> None:
        if text == self._printed and not self._tty:
            return
        self._printed = text
        if self._tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
