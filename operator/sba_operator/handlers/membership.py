"""Lease-based membership of the operator's replicas, and the namespaces each one owns.

Each replica holds a Lease `sba-operator-<identity>` (label `sba-agentic.io/operator-shard`)
in one namespace, renews it every `renew_seconds`, lists its peers' Leases on the same tick
and tells `on_change(owned, members)` whenever the namespaces it owns change. The protocol
that keeps a namespace from having two working owners is `reconcile.sharding.Replica`;
this module only runs it against the API server:

* a clean `stop()` first owns nothing, then deletes the Lease: peers take over on their
  next tick;
* a replica that cannot complete a tick (list and renew) for lease minus one renew
  interval owns nothing until it can again; its peers expire its Lease after a whole lease;
* a joining replica owns nothing until its peers have acknowledged it (a tick or two).

`on_change` must have stopped the work in namespaces it lost before it returns: the
replica acknowledges newcomers only after that, and they start at once. It may be a plain
function or a coroutine function. Until its first call the replica owns nothing.

| variable | default | what |
|---|---|---|
| SBA_OPERATOR_SHARDING | off | on: replicas share namespaces through Lease membership |
| SBA_OPERATOR_IDENTITY | $POD_ID, else $HOSTNAME, else random | this replica's member name |
| SBA_OPERATOR_LEASE_NAMESPACE | $POD_NAMESPACE, else the pod's own, else sba-system | Leases |
| SBA_OPERATOR_RENEW_SECONDS | 2 | renew (and list) interval |
| SBA_OPERATOR_LEASE_SECONDS | 10 | leaseDurationSeconds; at least 3 renew intervals |
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from sba_operator.kube.client import Conflict, KubeError, NotFound
from sba_operator.reconcile.sharding import (
    SHARD_SELECTOR,
    Claims,
    LeaseRecord,
    LeaseWrite,
    Replica,
    WriteFailure,
    new_replica,
    parse_lease,
    valid_identity,
)
from sba_operator.settings import SettingsError

log = logging.getLogger(__name__)

T = TypeVar("T")

Owned = Callable[[str], bool]
"""namespace -> whether this replica owns it."""
OnChange = Callable[[Owned, tuple[str, ...]], Awaitable[None] | None]
"""(owned, members) -> None; members is () while the replica owns nothing."""


class Leases(Protocol):
    """The Lease calls membership makes (`kube.leases.LeaseApi`, or a fake in tests)."""

    async def list(self, label_selector: str) -> list[dict[str, Any]]: ...
    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...
    async def delete(self, name: str, resource_version: str | None = None) -> None: ...


DEFAULT_NAMESPACE: Final = "sba-system"
_SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """The pod's name (the chart's POD_ID, else HOSTNAME), else a random name."""
    env = os.environ if env is None else env
    for name in ("POD_ID", "HOSTNAME"):
        value = env.get(name, "").strip().lower()
        if value and valid_identity(value):
            return value
    return f"replica-{secrets.token_hex(4)}"


def default_namespace(env: Mapping[str, str] | None = None) -> str:
    """POD_NAMESPACE, else the namespace of the pod's service account, else sba-system."""
    env = os.environ if env is None else env
    if value := env.get("POD_NAMESPACE", "").strip():
        return value
    with contextlib.suppress(OSError):
        if value := _SERVICE_ACCOUNT_NAMESPACE.read_text().strip():
            return value
    return DEFAULT_NAMESPACE


@dataclass(frozen=True)
class MembershipSettings:
    enabled: bool = False
    identity: str = field(default_factory=default_identity)
    """Unique per replica: two processes with one identity take turns, never both work."""
    namespace: str = DEFAULT_NAMESPACE
    """Where the Leases live (the operator's own namespace)."""
    renew_seconds: float = 2.0
    lease_seconds: float = 10.0
    """leaseDurationSeconds: how long a crashed replica's namespaces wait for a new owner."""

    def __post_init__(self) -> None:
        if not valid_identity(self.identity):
            raise SettingsError(
                f"operator identity {self.identity!r} must be a lowercase DNS name "
                "(letters, digits, '-', '.')"
            )
        if self.renew_seconds <= 0:
            raise SettingsError("the membership renew interval must be positive")
        if self.lease_seconds < 3 * self.renew_seconds:
            raise SettingsError("the membership lease must last at least 3 renew intervals")

    @property
    def fence_seconds(self) -> float:
        """A replica owns nothing once its last good tick is this old."""
        return self.lease_seconds - self.renew_seconds

    @property
    def request_timeout(self) -> float:
        """Per API call: a tick or two, never so long that one call spans the fence."""
        return min(max(self.renew_seconds, 1.0), self.fence_seconds / 2)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MembershipSettings:
        env = os.environ if env is None else env

        def seconds(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise SettingsError(f"{name} must be positive")
            return value

        return cls(
            enabled=env.get("SBA_OPERATOR_SHARDING", "off").strip().lower() in ("1", "on", "true"),
            identity=env.get("SBA_OPERATOR_IDENTITY", "").strip() or default_identity(env),
            namespace=env.get("SBA_OPERATOR_LEASE_NAMESPACE", "").strip() or default_namespace(env),
            renew_seconds=seconds("SBA_OPERATOR_RENEW_SECONDS", 2.0),
            lease_seconds=seconds("SBA_OPERATOR_LEASE_SECONDS", 10.0),
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MembershipLoop:
    """Runs this replica's membership until `stop()` (clean) or `abandon()` (as a crash)."""

    def __init__(
        self,
        leases: Leases,
        settings: MembershipSettings,
        on_change: OnChange,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._leases = leases
        self._settings = settings
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self._replica = new_replica(
            settings.identity,
            secrets.token_hex(8),
            settings.lease_seconds,
            settings.renew_seconds,
        )
        self._applied = Claims(settings.identity)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def identity(self) -> str:
        return self._settings.identity

    @property
    def claims(self) -> Claims:
        """What the callback was last told."""
        return self._applied

    @property
    def members(self) -> tuple[str, ...]:
        return self._applied.members

    def owns(self, namespace: str) -> bool:
        return self._applied.owns(namespace)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sba-membership:{self.identity}")

    async def _run(self) -> None:
        """Tick every renew interval until `stop()`; never raises (but is cancellable)."""
        renew = self._settings.renew_seconds
        while not self._stopping.is_set():
            started = self._clock()
            try:
                await self._tick(started)
            except Exception:  # a bug here must not end membership: fencing still runs
                log.exception("membership tick of %s failed", self.identity)
            await self._apply(self._replica.fenced(self._clock()))
            wake = started + renew
            if (fence_at := self._replica.fence_at) is not None:
                wake = min(wake, fence_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(wake - self._clock(), 0.0))

    async def stop(self) -> None:
        """Leave cleanly: own nothing, then delete our Lease so that peers take over now."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._replica = self._replica.left()
        await self._apply(self._replica)
        await self._release(self._replica.own)

    async def abandon(self) -> None:
        """Stop without a word to anybody, as a crash would (tests): the Lease stays until a
        peer expires it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # -- one tick --------------------------------------------------------------------------

    async def _io(self, call: Coroutine[Any, Any, T]) -> T:
        """Bounded by the request timeout and, while we own namespaces, by the fence: a
        hung call must not keep us working past it."""
        timeout = self._settings.request_timeout + 1.0
        if (fence_at := self._replica.fence_at) is not None:
            timeout = min(timeout, max(fence_at - self._clock(), 0.0))
        return await asyncio.wait_for(call, timeout)

    async def _tick(self, started: float) -> None:
        try:
            raw = await self._io(self._leases.list(SHARD_SELECTOR))
        except (KubeError, TimeoutError) as exc:
            log.warning("membership of %s: cannot list Leases: %s", self.identity, exc)
            return
        records = [record for record in map(parse_lease, raw) if record is not None]
        self._replica, stale = self._replica.observed(records, started)
        gone = {lease.name for lease in stale if await self._expire(lease)}
        replica, write = self._replica.prepared(gone, self._clock(), self._wall())
        if not await self._apply(replica) or write is None:
            return  # never publish members before the callback has made room for them
        result = await self._write(write)
        await self._apply(self._replica.written(result, self._clock()))

    async def _expire(self, lease: LeaseRecord) -> bool:
        """Delete a stale Lease (only the version we saw go stale); True once it is gone."""
        try:
            await self._io(self._leases.delete(lease.name, lease.resource_version))
        except NotFound:
            return True
        except Conflict:
            return False  # renewed after all
        except (KubeError, TimeoutError) as exc:
            log.warning("membership: cannot expire Lease %s: %s", lease.name, exc)
            return False
        log.info("membership: expired the Lease of %s (no renewal for its duration)", lease.holder)
        return True

    async def _write(self, write: LeaseWrite) -> LeaseRecord | WriteFailure:
        try:
            if write.verb == "create":
                obj = await self._io(self._leases.create(write.body))
            else:
                obj = await self._io(self._leases.replace(write.name, write.body))
        except NotFound:
            return WriteFailure.GONE
        except Conflict:
            return WriteFailure.CONFLICT
        except (KubeError, TimeoutError) as exc:
            log.warning("membership of %s: cannot %s its Lease: %s", self.identity, write.verb, exc)
            return WriteFailure.FAILED
        return parse_lease(obj) or WriteFailure.FAILED

    async def _apply(self, replica: Replica) -> bool:
        """Adopt `replica`; tell the callback when the claims changed. False when it raised:
        the claims stay unapplied and are retried on the next tick."""
        self._replica = replica
        claims = replica.claims
        if claims == self._applied:
            return True
        try:
            result = self._on_change(claims.owns, claims.members)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("membership callback of %s failed", self.identity)
            return False
        if claims.active != self._applied.active:
            log.info(
                "membership: %s %s (%d members)",
                self.identity,
                "owns its share" if claims.active else "owns nothing",
                len(claims.members),
            )
        self._applied = claims
        return True

    async def _release(self, own: LeaseRecord | None) -> None:
        if own is None:
            return
        try:
            await self._io(self._leases.delete(own.name, own.resource_version))
            return
        except NotFound:
            return
        except Conflict:
            pass  # a renewal of ours we never heard back from: look again
        except (KubeError, TimeoutError) as exc:
            log.warning("membership: cannot delete the Lease of %s: %s", self.identity, exc)
            return
        try:
            raw = await self._io(self._leases.list(SHARD_SELECTOR))
            for record in map(parse_lease, raw):
                if record and record.name == own.name and record.incarnation == own.incarnation:
                    await self._io(self._leases.delete(record.name, record.resource_version))
        except (KubeError, TimeoutError) as exc:
            log.warning("membership: cannot delete the Lease of %s: %s", self.identity, exc)
