"""Progress reporting, inverted: library code calls a Reporter, the CLI draws it.

Library modules never print.  They receive a :class:`Reporter` and call its
``on_*`` methods; the CLI implements it with rich progress bars on a terminal and
plain lines otherwise.  :class:`NullReporter` is the default and
:class:`RecordingReporter` is what tests use.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Reporter(Protocol):
    def on_task_start(self, key: str, description: str, total: int | None = None) -> None: ...
    def on_task_progress(self, key: str, advance: int) -> None: ...
    def on_task_done(self, key: str, message: str = "") -> None: ...
    def on_message(self, message: str) -> None: ...


class NullReporter:
    def on_task_start(self, key: str, description: str, total: int | None = None) -> None:
        pass

    def on_task_progress(self, key: str, advance: int) -> None:
        pass

    def on_task_done(self, key: str, message: str = "") -> None:
        pass

    def on_message(self, message: str) -> None:
        pass


class RecordingReporter:
    """Keeps every event, for tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, *args: Any) -> None:
        with self._lock:
            self.events.append((kind, args))

    def on_task_start(self, key: str, description: str, total: int | None = None) -> None:
        self._add("start", key, description, total)

    def on_task_progress(self, key: str, advance: int) -> None:
        self._add("progress", key, advance)

    def on_task_done(self, key: str, message: str = "") -> None:
        self._add("done", key, message)

    def on_message(self, message: str) -> None:
        self._add("message", message)

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [args for k, args in self.events if k == kind]


def human_bytes(n: float) -> str:
    """``n`` bytes as B, KiB, MiB or GiB (one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class TransferMeter:
    """Bytes done of ``total``, the rate so far and the time left: the text of a transfer's progress line."""

    def __init__(self, total: int, clock: Any = None) -> None:
        import time

        self.total = total
        self.done = 0
        self._clock = clock or time.monotonic
        self._start = self._clock()

    def add(self, n: int) -> None:
        self.done += n

    def rate(self) -> float:
        elapsed = self._clock() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def line(self) -> str:
        eta = self.eta()
        return (f"{human_bytes(self.done)} / {human_bytes(self.total)}, {human_bytes(self.rate())}/s, "
                f"ETA {'?' if eta is None else f'{eta:.0f} s'}")
