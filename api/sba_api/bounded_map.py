"""A dict with a size bound: the oldest entries go first. For facts that never change
once true (a run's tenant), remembered per process so hot reads skip the database."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self._limit:
            self._items.pop(next(iter(self._items)))

    def __len__(self) -> int:
        return len(self._items)
