"""A small bounded memo a backend keeps of what cannot change any more (a final execution's status, a job it saw gone),
so that a warm process does not ask its provider again on every monitor tick.

The monitor is stateless across invocations: a memo is only an optimisation within one process, never a source of
truth. What goes in must be immutable in the provider (an ended Cloud Run execution, a deleted job); keys name the
identity that read it, so one pool's reading never answers for another pool's credentials.

Example:
    >>> memo = Memo(2)
    >>> memo.put("a", 1); memo.put("b", 2); memo.put("c", 3)
    >>> memo.get("a") is None, memo.get("c")
    (True, 3)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class Memo:
    """At most ``size`` entries, the least recently used dropped first; safe to share between threads."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
