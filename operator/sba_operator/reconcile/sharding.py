"""Sharding the operator's work by namespace: which replica owns which namespace. No I/O.

Ownership is rendezvous (highest-random-weight) hashing: a namespace belongs to the member
with the highest `blake2b(member, namespace)`. Every process computes the same owner from
the same member set, whatever order it lists them in, and a change of members moves only
what it must: a member that leaves hands over exactly its own namespaces, one that joins
takes about 1/n from the others. The hash is part of the protocol (replicas of different
versions must agree during a rolling upgrade), so it is pinned by tests.

Members are replicas holding a Lease `sba-operator-<identity>` labelled `SHARD_LABEL`.
`Replica` is the protocol each replica runs on every tick (list, expire, write its Lease)
so that a namespace never has two working owners:

* Expiry is judged on the reader's own monotonic clock: a Lease whose resourceVersion has
  not changed for its leaseDurationSeconds since this replica first saw it is stale, so a
  clock that runs ahead cannot take a live peer's namespaces.
* A stale Lease is dropped only by deleting it with its resourceVersion as precondition.
  A holder renews with its resourceVersion as precondition, so etcd orders the two: either
  the renew wins (the delete gets 409 and nobody drops the holder) or the delete wins (the
  holder's next renew gets 404 and it rejoins from scratch).
* A replica fences itself: it works only while its last tick whose list and renew both
  succeeded started less than `fence_seconds` (lease minus one renew interval) ago. Peers
  drop it no sooner than a whole lease after they saw its last renew.
* A replica publishes, in its Lease, the uids of the Leases it counts as members. A
  replica that joins (or rejoins with a new Lease) starts working only once a LIST that
  shows its own Lease shows every other member's published view naming it, or once it has
  held the Lease for a whole lease duration (by then a peer that has not seen it has
  fenced itself). A peer that joins later sees its Lease and must wait for its word. A working
  replica adds members before it publishes them (`prepare` claims from the union of the
  old and new member sets), so a published view never names a member it still competes
  with.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from sba_core import group

SHARD_LABEL: Final = f"{group.GROUP}/operator-shard"
SHARD_LABEL_VALUE: Final = "true"
SHARD_SELECTOR: Final = f"{SHARD_LABEL}={SHARD_LABEL_VALUE}"
VIEW_ANNOTATION: Final = f"{group.GROUP}/operator-view"
"""Comma-separated uids of the member Leases the holder acts on."""
INCARNATION_ANNOTATION: Final = f"{group.GROUP}/operator-incarnation"
"""Random per process: tells a replica its own Lease from one a same-named process wrote."""
LEASE_PREFIX: Final = "sba-operator-"
LEASE_API_VERSION: Final = "coordination.k8s.io/v1"

_HASH_PERSON: Final = b"sba-operator/v1"
"""blake2b personalization: changing it reshuffles every namespace, so it names a version."""

_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_MAX_NAME: Final = 253


def _weight(member: str, namespace: str) -> int:
    digest = hashlib.blake2b(
        f"{member}\x00{namespace}".encode(), digest_size=8, person=_HASH_PERSON
    ).digest()
    return int.from_bytes(digest, "big")


def owner_of(namespace: str, members: Iterable[str]) -> str:
    """The member that owns `namespace`; ValueError when there are no members."""
    best: tuple[int, str] | None = None
    for member in members:
        key = (_weight(member, namespace), member)  # the name breaks (2^-64) ties everywhere alike
        if best is None or key > best:
            best = key
    if best is None:
        raise ValueError(f"no members to own namespace {namespace!r}")
    return best[1]


def valid_identity(identity: str) -> bool:
    """Whether `sba-operator-<identity>` is a valid Lease name (a DNS subdomain)."""
    return (
        len(LEASE_PREFIX) + len(identity) <= _MAX_NAME
        and _DNS_SUBDOMAIN.fullmatch(identity) is not None
    )


def lease_name(identity: str) -> str:
    return f"{LEASE_PREFIX}{identity}"


# -- Lease records -----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """What the protocol reads from one member Lease."""

    name: str
    holder: str
    uid: str = ""
    resource_version: str = ""
    renew_time: datetime | None = None
    acquire_time: datetime | None = None
    duration_seconds: int | None = None
    incarnation: str = ""
    view: frozenset[str] = frozenset()
    """Uids of the member Leases the holder acts on (its acknowledgements)."""


def _micro_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_micro_time(at: datetime) -> str:
    """RFC 3339 with exactly six fractional digits: the API server rejects MicroTime without."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_lease(obj: Mapping[str, Any]) -> LeaseRecord | None:
    """A member Lease from its JSON; None when it is not one (no holder, or a name that is
    not `sba-operator-<holder>`), so a stray labelled Lease never becomes a member."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = str(metadata.get("name") or "")
    holder = str(spec.get("holderIdentity") or "")
    if not holder or name != lease_name(holder):
        return None
    annotations = metadata.get("annotations") or {}
    view = frozenset(
        uid.strip() for uid in str(annotations.get(VIEW_ANNOTATION) or "").split(",") if uid.strip()
    )
    duration = spec.get("leaseDurationSeconds")
    return LeaseRecord(
        name=name,
        holder=holder,
        uid=str(metadata.get("uid") or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
        renew_time=_micro_time(spec.get("renewTime")),
        acquire_time=_micro_time(spec.get("acquireTime")),
        duration_seconds=int(duration) if isinstance(duration, int) and duration > 0 else None,
        incarnation=str(annotations.get(INCARNATION_ANNOTATION) or ""),
        view=view,
    )


def lease_body(
    identity: str,
    incarnation: str,
    lease_seconds: float,
    now: datetime,
    view: Iterable[str],
    *,
    resource_version: str | None = None,
    acquire_time: datetime | None = None,
) -> dict[str, Any]:
    """The whole Lease a replica writes (create, or replace guarded by `resource_version`)."""
    metadata: dict[str, Any] = {
        "name": lease_name(identity),
        "labels": {SHARD_LABEL: SHARD_LABEL_VALUE, group.LABEL_MANAGED_BY: group.MANAGED_BY},
        "annotations": {
            INCARNATION_ANNOTATION: incarnation,
            VIEW_ANNOTATION: ",".join(sorted(set(view))),
        },
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            # Whole seconds on the wire; rounding up only makes peers wait longer.
            "leaseDurationSeconds": math.ceil(lease_seconds),
            "acquireTime": format_micro_time(acquire_time or now),
            "renewTime": format_micro_time(now),
        },
    }


# -- Views of the membership -------------------------------------------------------------


def _members(identities: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(identities)))


@dataclass(frozen=True)
class Membership:
    """A set of members in canonical (sorted, unique) order, and who owns what among them."""

    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.members))

    @classmethod
    def from_leases(cls, leases: Iterable[LeaseRecord], now: datetime) -> Membership:
        """The members whose Lease has not expired at `now` by its own renewTime.

        This trusts the writers' clocks against the reader's: right for a one-shot look
        (a CLI, a status page). The replicas themselves go by `Replica`, which needs no
        synchronized clocks.
        """
        live: list[str] = []
        for lease in leases:
            if lease.renew_time is None or lease.duration_seconds is None:
                continue
            if lease.renew_time + timedelta(seconds=lease.duration_seconds) > now:
                live.append(lease.holder)
        return cls(tuple(live))

    def __contains__(self, identity: object) -> bool:
        return identity in self.members

    def __len__(self) -> int:
        return len(self.members)

    def owner_of(self, namespace: str) -> str | None:
        return owner_of(namespace, self.members) if self.members else None

    def owns(self, identity: str, namespace: str) -> bool:
        return self.owner_of(namespace) == identity


@dataclass(frozen=True)
class Claims:
    """The namespaces one replica works on: those it wins among `members`.

    `members` is empty while the replica is not an active member (joining, fenced,
    stopped); it then owns nothing.
    """

    identity: str
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.members))

    @property
    def active(self) -> bool:
        return self.identity in self.members

    def owns(self, namespace: str) -> bool:
        return self.active and owner_of(namespace, self.members) == self.identity


# -- The protocol ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """When this replica first listed a Lease at its current uid and resourceVersion."""

    uid: str
    resource_version: str
    since: float
    """Monotonic seconds of the reader."""


def observe(
    sightings: Mapping[str, Sighting], leases: Iterable[LeaseRecord], now: float
) -> dict[str, Sighting]:
    """Sightings after a LIST at `now`: unchanged Leases keep their time, changed or new
    ones start now, vanished ones are forgotten."""
    seen: dict[str, Sighting] = {}
    for lease in leases:
        before = sightings.get(lease.name)
        if (
            before is not None
            and before.uid == lease.uid
            and before.resource_version == lease.resource_version
        ):
            seen[lease.name] = before
        else:
            seen[lease.name] = Sighting(lease.uid, lease.resource_version, now)
    return seen


class WriteFailure(StrEnum):
    GONE = "gone"
    """404: our Lease is gone (a peer expired it, or someone deleted it)."""
    CONFLICT = "conflict"
    """409: create found the name taken, or replace found the Lease changed."""
    FAILED = "failed"
    """No answer or another error: the write may or may not have happened."""


@dataclass(frozen=True)
class LeaseWrite:
    verb: Literal["create", "replace"]
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Replica:
    """One replica's protocol state. A tick is, in this order:

    1. LIST the member Leases; `observed(leases, now)` gives the stale ones to delete,
       each with its resourceVersion as precondition;
    2. `prepared(gone, now, wall)` with the names deleted (or already gone): the claims to
       apply before the write (never more than before) and the write to make;
    3. `written(result, now)`: the claims after it.

    `fenced(now)` at any time, and `fence_at` says when it next matters. The driver calls
    its `on_change` whenever `claims` differs from what it last applied, and must apply
    the claims (stop working where they shrank) before making the next write.
    """

    identity: str
    incarnation: str
    lease_seconds: float
    fence_seconds: float
    members: tuple[str, ...] = ()
    """Effective members (empty: not active)."""
    sightings: Mapping[str, Sighting] = field(default_factory=dict)
    own: LeaseRecord | None = None
    """Our Lease as last listed or written; None when we believe we hold none."""
    listed: tuple[LeaseRecord, ...] = ()
    """Member Leases of the current tick (after expiries)."""
    listed_at: float | None = None
    """Start of the current tick's successful LIST."""
    joined_at: float | None = None
    """When we came to hold our current Lease."""
    good_at: float | None = None
    """Start of the last tick whose LIST and write both succeeded."""

    @property
    def name(self) -> str:
        return lease_name(self.identity)

    @property
    def claims(self) -> Claims:
        return Claims(self.identity, self.members)

    @property
    def fence_at(self) -> float | None:
        """When an active replica must stop working unless a tick succeeds first."""
        if not self.members:
            return None
        return (self.good_at if self.good_at is not None else -math.inf) + self.fence_seconds

    def _ours(self, lease: LeaseRecord) -> bool:
        return lease.name == self.name and lease.incarnation == self.incarnation

    def observed(
        self, leases: Iterable[LeaseRecord], now: float
    ) -> tuple[Replica, tuple[LeaseRecord, ...]]:
        """After a successful LIST that started at `now`: the Leases to expire.

        Never our own; a Lease of our name written by another process (a crashed
        predecessor, or a misconfigured twin) is expired like any peer's once stale.
        """
        listed = tuple(leases)
        sightings = observe(self.sightings, listed, now)
        stale = tuple(
            lease
            for lease in listed
            if not self._ours(lease)
            and now - sightings[lease.name].since
            >= (lease.duration_seconds or math.ceil(self.lease_seconds))
        )
        return replace(self, sightings=sightings, listed=listed, listed_at=now), stale

    def prepared(
        self, gone: Collection[str], now: float, wall: datetime
    ) -> tuple[Replica, LeaseWrite | None]:
        """The claims to apply before writing, and the write (None: nothing to write)."""
        listed = tuple(lease for lease in self.listed if lease.name not in gone)
        mine = next((lease for lease in listed if lease.name == self.name), None)
        view = [lease.uid for lease in listed if lease.uid]
        if mine is not None and mine.incarnation != self.incarnation:
            # Another process holds our name: wait, owning nothing, until it is expired.
            return replace(self, listed=listed, members=(), own=None, joined_at=None), None
        if mine is None:
            # We hold no Lease (first tick, or it was expired or deleted): peers may already
            # have dropped us, so stop at once, then join from scratch.
            body = lease_body(self.identity, self.incarnation, self.lease_seconds, wall, view)
            state = replace(self, listed=listed, members=(), own=None, joined_at=None)
            return state, LeaseWrite("create", self.name, body)
        joined_at = self.joined_at
        if joined_at is None or self.own is None or self.own.uid != mine.uid:
            joined_at = now  # adopted: a create of ours whose answer we never got
        interim = self.members
        if interim:
            # Members we are about to publish count before we publish them.
            interim = _members((*interim, *(lease.holder for lease in listed)))
        body = lease_body(
            self.identity,
            self.incarnation,
            self.lease_seconds,
            wall,
            view,
            resource_version=mine.resource_version,
            acquire_time=mine.acquire_time,
        )
        state = replace(self, listed=listed, own=mine, joined_at=joined_at, members=interim)
        return state, LeaseWrite("replace", self.name, body)

    def written(self, result: LeaseRecord | WriteFailure, now: float) -> Replica:
        """After the write: activate, keep working with this tick's members, or stop."""
        if result is WriteFailure.GONE or (result is WriteFailure.CONFLICT and self.own is None):
            return replace(self, members=(), own=None, joined_at=None)
        if isinstance(result, WriteFailure):
            return self.fenced(now)  # keep the interim claims: nothing was published
        joined_at = self.joined_at
        if joined_at is None or self.own is None or self.own.uid != result.uid:
            joined_at = now
        peers = [lease for lease in self.listed if lease.name != self.name]
        state = replace(self, own=result, joined_at=joined_at, good_at=self.listed_at)
        # Only a LIST that already held our Lease can vouch for our peers: one from before
        # our create misses a peer creating at the same time (two lone replicas).
        listed_us = any(lease.uid == result.uid for lease in self.listed)
        acknowledged = listed_us and all(result.uid in lease.view for lease in peers)
        waited = listed_us and now - joined_at >= self.lease_seconds
        if self.members or acknowledged or waited:
            members = _members((self.identity, *(lease.holder for lease in peers)))
            state = replace(state, members=members)
        return state.fenced(now)

    def fenced(self, now: float) -> Replica:
        """Stop working once the last good tick is `fence_seconds` old."""
        fence_at = self.fence_at
        if fence_at is not None and now >= fence_at:
            return replace(self, members=())
        return self

    def left(self) -> Replica:
        """Before deleting our Lease on a clean stop."""
        return replace(self, members=())


def new_replica(
    identity: str, incarnation: str, lease_seconds: float, renew_seconds: float
) -> Replica:
    """A replica that holds nothing yet. It fences one renew interval before a whole lease
    has passed, leaving that interval for its callback to stop the work."""
    return Replica(identity, incarnation, lease_seconds, lease_seconds - renew_seconds)
