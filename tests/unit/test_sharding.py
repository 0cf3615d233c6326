"""Sharding the operator by namespace: rendezvous ownership, membership views, and the
Lease protocol that keeps a namespace from ever having two working owners.

The protocol is checked by simulation: replicas tick against an in-memory API server with
preconditions, while some crash, leave, lose their connection, lose a response, restart
under the same name or join; after every event no namespace may have two owners, and
once things settle every namespace has exactly one.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import heapq
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sba_operator.handlers.membership import (
    MembershipLoop,
    MembershipSettings,
    Owned,
    default_identity,
)
from sba_operator.kube.client import Conflict, KubeUnavailable, NotFound
from sba_operator.reconcile.sharding import (
    SHARD_LABEL,
    VIEW_ANNOTATION,
    Claims,
    LeaseRecord,
    LeaseWrite,
    Membership,
    Replica,
    WriteFailure,
    format_micro_time,
    lease_body,
    lease_name,
    new_replica,
    owner_of,
    parse_lease,
)
from sba_operator.settings import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]

identities = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
namespaces = st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True)
member_sets = st.sets(identities, min_size=1, max_size=12)
SAMPLE = [f"tenant-{i}" for i in range(2000)]


# -- Ownership ---------------------------------------------------------------------------


@given(member_sets, st.lists(namespaces, min_size=1, max_size=30))
def test_every_namespace_has_exactly_one_owner_among_the_members(
    members: set[str], names: list[str]
) -> None:
    view = Membership(tuple(members))
    for namespace in names:
        owner = owner_of(namespace, members)
        assert owner in members
        assert [m for m in members if view.owns(m, namespace)] == [owner]
        claims = {m: Claims(m, tuple(members)) for m in members}
        assert [m for m, c in claims.items() if c.owns(namespace)] == [owner]


@given(st.sets(identities, min_size=2, max_size=12), st.data())
def test_removing_a_member_moves_only_its_namespaces(
    members: set[str], data: st.DataObject
) -> None:
    leaving = data.draw(st.sampled_from(sorted(members)))
    rest = members - {leaving}
    for namespace in SAMPLE[:300]:
        before = owner_of(namespace, members)
        after = owner_of(namespace, rest)
        if before != leaving:
            assert after == before


@settings(max_examples=40, deadline=None)
@given(st.sets(identities, min_size=1, max_size=9), identities)
def test_adding_a_member_moves_about_one_in_n_and_only_to_it(
    members: set[str], joining: str
) -> None:
    if joining in members:
        return
    grown = members | {joining}
    moved = 0
    for namespace in SAMPLE:
        before, after = owner_of(namespace, members), owner_of(namespace, grown)
        if after != before:
            assert after == joining
            moved += 1
    expected = len(SAMPLE) / len(grown)
    # Binomial: the standard deviation is at most sqrt(2000)/2 ~ 22; six of them.
    assert abs(moved - expected) < 135, (moved, expected)


@given(member_sets, namespaces, st.randoms(use_true_random=False))
def test_the_owner_does_not_depend_on_order_or_duplicates(
    members: set[str], namespace: str, rnd: random.Random
) -> None:
    listed = sorted(members) * 2
    rnd.shuffle(listed)
    assert owner_of(namespace, listed) == owner_of(namespace, sorted(members))
    assert Membership(tuple(listed)).members == tuple(sorted(members))


def test_the_hash_is_pinned() -> None:
    """Replicas of two versions must agree during a rolling upgrade: changing the hash is
    a protocol change (bump its personalization and plan the rollout)."""
    members = ("sba-operator-0", "sba-operator-1", "sba-operator-2")
    assert {ns: owner_of(ns, members)[-1] for ns in PINNED} == PINNED


# A different hash agrees with all ten by chance once in 3^10.
PINNED = {
    "tenant-acme": "0",
    "tenant-globex": "0",
    "default": "0",
    "tenant-0": "2",
    "tenant-1": "1",
    "tenant-2": "1",
    "tenant-3": "0",
    "tenant-4": "2",
    "tenant-5": "0",
    "tenant-6": "1",
}


def test_every_process_computes_the_same_owners() -> None:
    """Not hash(): string hashing is salted per process (PYTHONHASHSEED)."""
    members = ["a", "b", "c", "d", "e"]
    script = (
        "import json, sys; from sba_operator.reconcile.sharding import owner_of; "
        f"print(json.dumps([owner_of(f'tenant-{{i}}', {members!r}) for i in range(200)]))"
    )
    here = [owner_of(f"tenant-{i}", members) for i in range(200)]
    for seed in ("1", "2", "random"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT / "operator")},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(done.stdout) == here
    assert len(set(here)) == len(members)  # and they spread


def test_no_members_own_nothing() -> None:
    with pytest.raises(ValueError, match="no members"):
        owner_of("tenant-a", [])
    assert Membership().owner_of("tenant-a") is None
    assert not Claims("a").owns("tenant-a")
    assert not Claims("a", ("b", "c")).owns("tenant-a")  # not a member itself


# -- Membership from Lease records --------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def record(holder: str, renewed_ago: float | None, duration: int | None = 10) -> LeaseRecord:
    renew = None if renewed_ago is None else NOW - timedelta(seconds=renewed_ago)
    return LeaseRecord(lease_name(holder), holder, renew_time=renew, duration_seconds=duration)


def test_membership_excludes_expired_leases_and_orders_members() -> None:
    leases = [
        record("c", 1),
        record("a", 9.999),
        record("b", 10),  # renewTime + duration == now: expired
        record("d", 30),
        record("e", None),
        record("f", 0, duration=None),
        record("a", 2),
    ]
    assert Membership.from_leases(leases, NOW).members == ("a", "c")


@given(
    st.lists(
        st.tuples(identities, st.floats(0, 40, allow_nan=False), st.integers(1, 30)), max_size=10
    )
)
def test_membership_is_exactly_the_unexpired_holders(rows: list[tuple[str, float, int]]) -> None:
    leases = [record(h, ago, duration) for h, ago, duration in rows]
    view = Membership.from_leases(leases, NOW)
    expected = {
        h
        for h, ago, duration in rows
        if NOW - timedelta(seconds=ago) + timedelta(seconds=duration) > NOW
    }
    assert view.members == tuple(sorted(expected))
    rnd = random.Random(len(rows))
    rnd.shuffle(leases)
    assert Membership.from_leases(leases, NOW) == view


def test_a_lease_round_trips_through_its_body() -> None:
    at = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)  # zero microseconds: still six digits
    body = lease_body("op-1", "inc", 9.5, at, ["u2", "u1", "u2"], resource_version="7")
    assert body["spec"] == {
        "holderIdentity": "op-1",
        "leaseDurationSeconds": 10,
        "acquireTime": "2025-01-01T12:00:00.000000Z",
        "renewTime": "2025-01-01T12:00:00.000000Z",
    }
    assert body["metadata"]["name"] == "sba-operator-op-1"
    assert body["metadata"]["labels"][SHARD_LABEL] == "true"
    assert SHARD_LABEL == "sba-agentic.io/operator-shard"
    assert body["metadata"]["annotations"][VIEW_ANNOTATION] == "u1,u2"
    body["metadata"]["uid"] = "u9"
    parsed = parse_lease(body)
    assert parsed == LeaseRecord(
        name="sba-operator-op-1",
        holder="op-1",
        uid="u9",
        resource_version="7",
        renew_time=at,
        acquire_time=at,
        duration_seconds=10,
        incarnation="inc",
        view=frozenset({"u1", "u2"}),
    )
    assert format_micro_time(at + timedelta(microseconds=5)) == "2025-01-01T12:00:00.000005Z"


def test_leases_that_are_not_members_are_ignored() -> None:
    assert parse_lease({"metadata": {"name": "sba-operator-a"}, "spec": {}}) is None
    assert parse_lease({"metadata": {"name": "other"}, "spec": {"holderIdentity": "a"}}) is None


# -- Settings ----------------------------------------------------------------------------


def test_settings_from_env() -> None:
    got = MembershipSettings.from_env(
        {
            "SBA_OPERATOR_SHARDING": "on",
            "SBA_OPERATOR_IDENTITY": "op-a",
            "SBA_OPERATOR_LEASE_NAMESPACE": "ops",
            "SBA_OPERATOR_RENEW_SECONDS": "1",
            "SBA_OPERATOR_LEASE_SECONDS": "6",
        }
    )
    assert got == MembershipSettings(True, "op-a", "ops", 1.0, 6.0)
    assert got.fence_seconds == 5.0
    defaults = MembershipSettings.from_env({"POD_ID": "sba-op-7d9f-x2", "POD_NAMESPACE": "sba"})
    assert (defaults.enabled, defaults.identity, defaults.namespace) == (
        False,
        "sba-op-7d9f-x2",
        "sba",
    )
    assert (defaults.renew_seconds, defaults.lease_seconds) == (2.0, 10.0)
    assert default_identity({"HOSTNAME": "Laptop"}) == "laptop"
    assert default_identity({}).startswith("replica-")
    assert default_identity({}) != default_identity({})
    with pytest.raises(SettingsError, match="3 renew intervals"):
        MembershipSettings(identity="a", renew_seconds=2, lease_seconds=5)
    with pytest.raises(SettingsError, match="DNS name"):
        MembershipSettings(identity="Not_Valid")
    with pytest.raises(SettingsError, match="SBA_OPERATOR_LEASE_SECONDS"):
        MembershipSettings.from_env({"SBA_OPERATOR_LEASE_SECONDS": "soon"})


# -- The protocol, simulated ---------------------------------------------------------------


class Store:
    """The API server's side of Leases: uids, resourceVersions and preconditions."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    def _stamp(self, body: Mapping[str, Any], uid: str) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["uid"] = uid
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(obj) for obj in self.objects.values()]

    def create(self, body: Mapping[str, Any]) -> dict[str, Any] | WriteFailure:
        if body["metadata"]["name"] in self.objects:
            return WriteFailure.CONFLICT
        return self._stamp(body, f"uid-{next(self._uids)}")

    def replace(self, name: str, body: Mapping[str, Any]) -> dict[str, Any] | WriteFailure:
        current = self.objects.get(name)
        if current is None:
            return WriteFailure.GONE
        if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            return WriteFailure.CONFLICT
        return self._stamp(body, current["metadata"]["uid"])

    def delete(self, name: str, resource_version: str | None) -> WriteFailure | None:
        current = self.objects.get(name)
        if current is None:
            return WriteFailure.GONE
        if resource_version is not None and current["metadata"]["resourceVersion"] != (
            resource_version
        ):
            return WriteFailure.CONFLICT
        del self.objects[name]
        return None


RENEW, LEASE = 1.0, 4.0
SIM_NAMESPACES = [f"tenant-{i}" for i in range(48)]


@functools.lru_cache(maxsize=4096)
def owned_by(claims: Claims) -> frozenset[str]:
    """The simulated namespaces `claims` own (cached: claims change far less than time)."""
    return frozenset(ns for ns in SIM_NAMESPACES if claims.owns(ns))


@dataclass
class Node:
    replica: Replica
    offset: float
    """Each replica's monotonic clock has its own origin: only differences may matter."""
    alive: bool = True
    cut_until: float = -1.0
    lose_next_response: bool = False
    tick_at: float = 0.0
    snapshot: tuple[float, list[dict[str, Any]]] | None = None
    pending: LeaseWrite | None = None
    answer: LeaseRecord | WriteFailure | None = None

    def now(self, t: float) -> float:
        return t + self.offset

    def reachable(self, t: float) -> bool:
        return t >= self.cut_until


@dataclass
class Cluster:
    rnd: random.Random
    slow: float = 0.0
    """The share of answers that take most of a renew interval."""
    store: Store = field(default_factory=Store)
    nodes: list[Node] = field(default_factory=list)
    queue: list[tuple[float, int, int, str]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    t: float = 0.0

    def add(self, identity: str, at: float) -> int:
        # Unique per process, like the loop's random token (never drawn: draws may repeat).
        replica = new_replica(identity, f"incarnation-{len(self.nodes)}", LEASE, RENEW)
        self.nodes.append(Node(replica, self.rnd.uniform(-1000, 1000)))
        index = len(self.nodes) - 1
        self.schedule(at, index, "list")
        return index

    def schedule(self, at: float, index: int, phase: str) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), index, phase))

    def check(self) -> None:
        seen: dict[str, str] = {}
        for node in self.nodes:
            if not node.alive:
                continue
            for namespace in owned_by(node.replica.claims):
                other = seen.setdefault(namespace, node.replica.identity)
                assert other is node.replica.identity, (
                    f"{namespace} owned by {[other, node.replica.identity]} at t={self.t:.2f}"
                )

    def step(self, index: int, phase: str) -> None:
        """A tick is four events, each after a random latency, so that other replicas act
        between a LIST and its answer, and between a write landing and its answer."""
        node = self.nodes[index]
        if not node.alive:
            return
        now, wall = node.now(self.t), NOW + timedelta(seconds=self.t)
        reachable = node.reachable(self.t)
        if phase == "list":
            node.tick_at = self.t
            if not reachable:
                self.next_tick(index)
                return
            node.snapshot = (now, self.store.list())
            self.schedule(self.t + self.latency(), index, "listed")
        elif phase == "listed" and node.snapshot is not None:
            (started, raw), node.snapshot = node.snapshot, None
            records = [r for r in map(parse_lease, raw) if r]
            node.replica, stale = node.replica.observed(records, started)
            gone = set()
            for lease in stale:
                if self.store.delete(lease.name, lease.resource_version) in (
                    None,
                    WriteFailure.GONE,
                ):
                    gone.add(lease.name)
            node.replica, node.pending = node.replica.prepared(gone, now, wall)
            if node.pending is None:
                self.next_tick(index)
            else:
                self.schedule(self.t + self.latency(), index, "write")
        elif phase == "write" and node.pending is not None:
            write, node.pending = node.pending, None
            result: dict[str, Any] | WriteFailure = WriteFailure.FAILED
            if reachable:
                if write.verb == "create":
                    result = self.store.create(write.body)
                else:
                    result = self.store.replace(write.name, write.body)
                if node.lose_next_response:
                    node.lose_next_response, result = False, WriteFailure.FAILED
            node.answer = result if isinstance(result, WriteFailure) else parse_lease(result)
            self.schedule(self.t + self.latency(), index, "answer")
        elif phase == "answer" and node.answer is not None:
            answer, node.answer = node.answer, None
            node.replica = node.replica.written(answer, now)
            self.next_tick(index)

    def next_tick(self, index: int) -> None:
        """Like the loop: every renew interval, but never before the last tick is done."""
        self.schedule(max(self.nodes[index].tick_at + RENEW, self.t), index, "list")

    def latency(self) -> float:
        """Mostly quick; now and then an answer that takes most of a renew interval."""
        return self.rnd.uniform(0.0, 0.9 if self.rnd.random() < self.slow else 0.1)

    def run_until(self, end: float, faults: list[tuple[float, int, str, float]]) -> None:
        faults = sorted(faults)
        while self.queue and self.queue[0][0] <= end:
            at, _, index, phase = heapq.heappop(self.queue)
            while faults and faults[0][0] <= at:
                self.t = faults[0][0]
                self.fence_all()
                self.fault(*faults.pop(0)[1:])
                self.check()
            self.t = at
            self.fence_all()  # timers fire at fence_at: nothing else changes in between
            self.step(index, phase)
            self.check()

    def fence_all(self) -> None:
        for node in self.nodes:
            node.replica = node.replica.fenced(node.now(self.t))

    def fault(self, index: int, kind: str, duration: float) -> None:
        live = [i for i, n in enumerate(self.nodes) if n.alive]
        if not live:
            self.add(f"r{len(self.nodes)}", self.t)
            return
        victim = live[index % len(live)]
        node = self.nodes[victim]
        if kind == "crash":
            node.alive = False
        elif kind == "restart":  # same name, new process (a StatefulSet pod)
            node.alive = False
            self.add(node.replica.identity, self.t + duration)
        elif kind == "leave":
            node.replica = node.replica.left()
            own = node.replica.own
            if own is not None and node.reachable(self.t):
                self.store.delete(own.name, own.resource_version)
            node.alive = False
        elif kind == "cut":
            node.cut_until = self.t + duration
        elif kind == "lose":
            node.lose_next_response = True
        elif kind == "twin":  # a misconfigured second process with the same identity
            self.add(node.replica.identity, self.t)
        elif kind == "join":
            self.add(f"r{len(self.nodes)}", self.t)

    def owners(self) -> dict[str, list[str]]:
        return {
            ns: [n.replica.identity for n in self.nodes if n.alive and n.replica.claims.owns(ns)]
            for ns in SIM_NAMESPACES
        }


fault_lists = st.lists(
    st.tuples(
        st.floats(0, 40, allow_nan=False),
        st.integers(0, 7),
        st.sampled_from(["crash", "restart", "leave", "cut", "lose", "twin", "join"]),
        st.floats(0.1, 12, allow_nan=False),
    ),
    max_size=10,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), fault_lists, st.randoms(use_true_random=False))
def test_no_namespace_ever_has_two_owners_and_all_are_owned_once_settled(
    replicas: int, faults: list[tuple[float, int, str, float]], rnd: random.Random
) -> None:
    cluster = Cluster(rnd, slow=0.15)
    for i in range(replicas):
        cluster.add(f"r{i}", rnd.uniform(0, RENEW))
    last = max((at + duration for at, _, _, duration in faults), default=0.0)
    cluster.run_until(last + 8 * LEASE, faults)  # `check` ran after every event
    alive = {n.replica.identity for n in cluster.nodes if n.alive}
    owners = cluster.owners()
    if alive:
        assert all(len(o) == 1 for o in owners.values()), owners
        assert {o[0] for o in owners.values()} <= alive


def run_quiet(cluster: Cluster, until: float) -> None:
    cluster.run_until(until, [])


def active(cluster: Cluster) -> list[str]:
    return sorted(n.replica.identity for n in cluster.nodes if n.alive and n.replica.claims.active)


def test_a_lone_replica_owns_everything_from_its_second_tick() -> None:
    cluster = Cluster(random.Random(1))
    cluster.add("solo", 0.0)
    run_quiet(cluster, 0.5)
    assert not active(cluster)  # its first LIST could not show a peer creating alongside
    run_quiet(cluster, 1.5)
    assert all(o == ["solo"] for o in cluster.owners().values())


def test_joining_takes_a_couple_of_ticks_and_leaving_one() -> None:
    cluster = Cluster(random.Random(2))
    for i in range(3):
        cluster.add(f"r{i}", i * 0.3)
    run_quiet(cluster, 3 * RENEW)
    assert active(cluster) == ["r0", "r1", "r2"]
    cluster.add("r3", cluster.t)
    joined = cluster.t
    run_quiet(cluster, joined + 3 * RENEW)  # well before a whole lease
    assert active(cluster) == ["r0", "r1", "r2", "r3"]
    cluster.fault(0, "leave", 0)
    left = cluster.t
    run_quiet(cluster, left + 1.5 * RENEW)
    assert active(cluster) == ["r1", "r2", "r3"]
    assert all(len(o) == 1 for o in cluster.owners().values())


def test_a_crashed_replica_is_replaced_after_its_lease() -> None:
    cluster = Cluster(random.Random(3))
    for i in range(3):
        cluster.add(f"r{i}", 0.1 * i)
    run_quiet(cluster, 3 * RENEW)
    crashed = cluster.t
    cluster.fault(1, "crash", 0)
    run_quiet(cluster, crashed + LEASE - 0.5 * RENEW)
    orphans = [ns for ns, o in cluster.owners().items() if not o]
    assert orphans  # still waiting: it might only be cut off
    run_quiet(cluster, crashed + LEASE + 2.5 * RENEW)
    assert all(len(o) == 1 for o in cluster.owners().values())
    assert "sba-operator-r1" not in cluster.store.objects


def test_a_cut_off_replica_fences_itself_before_peers_take_over() -> None:
    cluster = Cluster(random.Random(4))
    cluster.add("a", 0.0)
    cluster.add("b", 0.5)
    run_quiet(cluster, 4 * RENEW)
    a = cluster.nodes[0]
    a.cut_until = cluster.t + 3 * LEASE
    cut = cluster.t
    run_quiet(cluster, cut + LEASE - RENEW + 0.01)
    assert not a.replica.claims.active  # fenced by now, before b may expire it
    run_quiet(cluster, cut + 3 * LEASE + 3 * RENEW)
    assert active(cluster) == ["a", "b"]  # and back once reachable


def test_twins_with_one_identity_never_both_work() -> None:
    cluster = Cluster(random.Random(5))
    cluster.add("a", 0.0)
    cluster.add("a", 0.2)
    run_quiet(cluster, 5 * LEASE)
    assert sum(n.replica.claims.active for n in cluster.nodes) == 1


# -- The driver ----------------------------------------------------------------------------


class FakeLeases:
    """`Leases` over a `Store`; `hang` makes every call wait forever (a black-holed API)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hang = asyncio.Event()

    async def _maybe_hang(self) -> None:
        await asyncio.sleep(0)
        if self.hang.is_set():
            await asyncio.Event().wait()

    @staticmethod
    def _raise(failure: WriteFailure) -> None:
        if failure is WriteFailure.GONE:
            raise NotFound(404, "NotFound", "gone")
        if failure is WriteFailure.CONFLICT:
            raise Conflict(409, "Conflict", "conflict")
        raise KubeUnavailable("down")

    async def list(self, label_selector: str) -> list[dict[str, Any]]:
        await self._maybe_hang()
        return self.store.list()

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        await self._maybe_hang()
        result = self.store.create(body)
        if isinstance(result, WriteFailure):
            self._raise(result)
            raise AssertionError
        return result

    async def replace(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await self._maybe_hang()
        result = self.store.replace(name, body)
        if isinstance(result, WriteFailure):
            self._raise(result)
            raise AssertionError
        return result

    async def delete(self, name: str, resource_version: str | None = None) -> None:
        await self._maybe_hang()
        if (failure := self.store.delete(name, resource_version)) is not None:
            self._raise(failure)


async def _until(check: Any, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_loop_owns_shares_fences_when_the_api_hangs_and_releases_on_stop() -> None:
    store = Store()
    calls: dict[str, list[tuple[Owned, tuple[str, ...]]]] = {"a": [], "b": []}
    loops: list[MembershipLoop] = []
    for identity in ("a", "b"):
        config = MembershipSettings(True, identity, "ops", renew_seconds=0.05, lease_seconds=0.5)

        def on_change(owned: Owned, members: tuple[str, ...], i: str = identity) -> None:
            calls[i].append((owned, members))

        loops.append(MembershipLoop(FakeLeases(store), config, on_change))
    a, b = loops
    a.start()
    await _until(lambda: a.members == ("a",), 2)
    b.start()
    await _until(lambda: a.members == ("a", "b") == b.members, 2)
    owned = [[ns for ns in SIM_NAMESPACES if loop.owns(ns)] for loop in loops]
    assert sorted(owned[0] + owned[1]) == sorted(SIM_NAMESPACES)
    assert owned[0]
    assert owned[1]
    assert calls["b"][-1][1] == ("a", "b")

    api_b = b._leases
    assert isinstance(api_b, FakeLeases)
    api_b.hang.set()  # b's calls never return: it must stop owning within its fence
    hung = asyncio.get_running_loop().time()
    await _until(lambda: not b.claims.active, 1)
    assert asyncio.get_running_loop().time() - hung <= 0.5 - 0.05 + 0.1
    last_b = calls["b"][-1]
    assert last_b[1] == ()
    await _until(lambda: a.members == ("a",), 2)  # a expires b's Lease
    await b.abandon()

    await a.stop()
    assert calls["a"][-1][1] == ()
    assert store.objects == {}  # released: a peer would take over at once
