"""An in-memory copy of one kind of Kubernetes object, kept by LIST + WATCH on a thread.

Each API process keeps its own copy, so reads (`GET /api/v1/runs/{id}`) cost a dict
lookup instead of an API-server round trip. The copy is only trusted while the watch is
live: before the first LIST completes, after a watch error and until the next LIST, the
cache says it is not synced and callers read directly. A key the cache does not hold is
not proof of absence either (a run created a moment ago may not have arrived yet), so
callers fall back to a direct read for it: the cache never answers wrongly, at worst
slowly. Objects are handed out as the API server sent them; callers must not mutate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name); namespace "" for cluster-scoped objects."""

WATCH_TIMEOUT_SECONDS = 300
"""The server ends each watch after this; the next one resumes at the last version."""
REQUEST_TIMEOUT_SECONDS = 30.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchCache:
    def __init__(
        self,
        list_fn: Callable[..., Any],
        *,
        name: str,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    ) -> None:
        """`list_fn(**kwargs)` lists the kind (e.g. a partial of
        `CustomObjectsApi.list_cluster_custom_object`), as a dict."""
        self._list = list_fn
        self._name = name
        self._watch_timeout = watch_timeout_seconds
        self._objects: dict[Key, dict[str, Any]] = {}
        self._generation = 0
        """Bumped on every change: lets a reader reuse what it derived from the objects."""
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    # -- the event loop's side -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        current = self._watch
        if current is not None:
            current.stop()  # type: ignore[no-untyped-call]

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object if the cache holds it and is live; None means "read directly"."""
        if not self._synced.is_set():
            return None
        with self._lock:
            return self._objects.get((namespace, name))

    def snapshot(self) -> tuple[int, list[dict[str, Any]]] | None:
        """(generation, every object) while live; None means "read directly"."""
        if not self._synced.is_set():
            return None
        with self._lock:
            return self._generation, list(self._objects.values())

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    # -- the watch thread ------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                version = self._relist()
                failures = 0
                self._follow(version)
            except Exception as exc:  # any failure: direct reads until the next LIST
                self._synced.clear()
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if not self._stopping.is_set():
                    log.warning("watch of %s lost (%s); relisting in %.1fs", self._name, exc, delay)
                    self._stopping.wait(delay)

    def _relist(self) -> str:
        listed = self._list(_request_timeout=REQUEST_TIMEOUT_SECONDS)
        objects = {key_of(o): o for o in listed.get("items") or []}
        with self._lock:
            self._objects = objects
            self._generation += 1
        self._synced.set()
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        log.info("watch cache %s: %d objects at version %s", self._name, len(objects), version)
        return version

    def _follow(self, version: str) -> None:
        """Apply watch events from `version` on; ends with the watch (the caller relists
        on errors, and simply watches again from the last version after a timeout)."""
        while not self._stopping.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    self._list,
                    resource_version=version,
                    timeout_seconds=self._watch_timeout,
                    allow_watch_bookmarks=True,
                    _request_timeout=self._watch_timeout + REQUEST_TIMEOUT_SECONDS,
                ):
                    kind = event.get("type")
                    obj = event.get("object")
                    if kind == "ERROR" or not isinstance(obj, dict):
                        raise RuntimeError(f"watch error: {obj!r}"[:300])
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    with self._lock:
                        if kind == "DELETED":
                            self._objects.pop(key_of(obj), None)
                            self._generation += 1
                        else:
                            self._objects[key_of(obj)] = obj
                            self._generation += 1
            except ApiException as exc:
                if exc.status == 410:  # the version is too old: start over from a LIST
                    raise RuntimeError("watch version expired") from exc
                raise
            finally:
                self._watch = None
            # A server-side timeout ended the watch: watch again from `version`.
