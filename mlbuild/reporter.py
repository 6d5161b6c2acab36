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
