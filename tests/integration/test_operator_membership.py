"""Operator membership against the real kube-apiserver: replicas share 50 namespaces
through Leases, hand them over at once on a clean stop, after a lease on a crash, and give
a share to a newcomer; at no moment does a namespace have two owners.

Each replica has its own ApiClient (as separate processes would); short leases keep the
test quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes import client

from sba_operator.handlers.membership import MembershipLoop, MembershipSettings, Owned
from sba_operator.kube import new_api_client
from sba_operator.kube.leases import LeaseApi
from sba_operator.reconcile.sharding import SHARD_SELECTOR, lease_body, lease_name, parse_lease

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RENEW, LEASE = 0.3, 2.0
NAMESPACES = [f"tenant-shard-{i}" for i in range(50)]


@pytest.fixture
def lease_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"membership-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


class Replicas:
    """Membership loops in this process; `dead` ones (stopped or killed) own nothing."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self._kubeconfig = str(kubeconfig)
        self._namespace = namespace
        self.loops: dict[str, MembershipLoop] = {}
        self.dead: set[str] = set()
        self._apis: list[LeaseApi] = []
        self.changes: dict[str, list[tuple[str, ...]]] = {}

    def start(self, identity: str) -> MembershipLoop:
        config = MembershipSettings(True, identity, self._namespace, RENEW, LEASE)
        api = LeaseApi(new_api_client(self._kubeconfig), self._namespace, config.request_timeout)
        self._apis.append(api)
        self.changes[identity] = []

        def on_change(owned: Owned, members: tuple[str, ...]) -> None:
            self.changes[identity].append(members)

        loop = MembershipLoop(api, config, on_change)
        self.loops[identity] = loop
        loop.start()
        return loop

    def owners(self) -> dict[str, list[str]]:
        return {
            ns: [i for i, loop in self.loops.items() if i not in self.dead and loop.owns(ns)]
            for ns in NAMESPACES
        }

    def settled(self, members: tuple[str, ...]) -> bool:
        """Every live replica sees `members` and each namespace has exactly one owner."""
        live = [loop for i, loop in self.loops.items() if i not in self.dead]
        return all(loop.members == members for loop in live) and all(
            len(o) == 1 for o in self.owners().values()
        )

    def share(self) -> dict[str, str]:
        return {ns: o[0] for ns, o in self.owners().items() if o}

    async def close(self) -> None:
        for identity, loop in self.loops.items():
            if identity not in self.dead:
                await loop.stop()
        for api in self._apis:
            api.close()


async def _within(seconds: float, check: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds:.1f}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(kubeconfig: Path, lease_namespace: str) -> AsyncIterator[Replicas]:
    group = Replicas(kubeconfig, lease_namespace)
    violations: list[str] = []

    async def watch_for_two_owners() -> None:
        while True:
            for ns, owners in group.owners().items():
                if len(owners) > 1:
                    violations.append(f"{ns}: {owners}")
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(watch_for_two_owners())
    try:
        yield group
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await group.close()
    assert violations == [], violations[:5]


async def test_replicas_share_hand_over_and_take_a_share(
    replicas: Replicas, kube_api: client.ApiClient, lease_namespace: str
) -> None:
    def leases(label_selector: str | None = None, field_selector: str | None = None) -> list[Any]:
        """Leases as the official client sees them, independently of ours."""
        found = client.CoordinationV1Api(kube_api).list_namespaced_lease(
            lease_namespace, label_selector=label_selector, field_selector=field_selector
        )
        items: list[Any] = kube_api.sanitize_for_serialization(found)["items"]  # type: ignore[no-untyped-call]
        return items

    for identity in ("op-a", "op-b", "op-c"):
        replicas.start(identity)
    took = await _within(
        5, lambda: replicas.settled(("op-a", "op-b", "op-c")), "three replicas share"
    )
    before = replicas.share()
    assert set(before.values()) == {"op-a", "op-b", "op-c"}
    listed = leases(label_selector=SHARD_SELECTOR)
    assert sorted(lease["metadata"]["name"] for lease in listed) == [
        lease_name(i) for i in ("op-a", "op-b", "op-c")
    ]
    assert {lease["spec"]["leaseDurationSeconds"] for lease in listed} == {2}
    print(f"three replicas settled in {took:.2f}s")

    # A clean stop: b owns nothing, deletes its Lease, and a and c take its share next tick.
    await replicas.loops["op-b"].stop()
    replicas.dead.add("op-b")
    assert replicas.changes["op-b"][-1] == ()
    took = await _within(1.5, lambda: replicas.settled(("op-a", "op-c")), "b's share moves")
    after = replicas.share()
    assert {ns: o for ns, o in after.items() if before[ns] != "op-b"} == {
        ns: o for ns, o in before.items() if o != "op-b"
    }  # only b's namespaces moved
    print(f"clean stop handed over in {took:.2f}s")

    # A crash: c's Lease stays until a sees it unrenewed for its duration and expires it.
    before = after
    await replicas.loops["op-c"].abandon()
    replicas.dead.add("op-c")
    orphaned = [ns for ns, o in before.items() if o == "op-c"]
    assert orphaned
    killed = time.monotonic()
    took = await _within(
        LEASE + 2 * RENEW + 1.0, lambda: replicas.settled(("op-a",)), "c's share is taken over"
    )
    assert took >= LEASE - RENEW  # not before c could have fenced itself
    assert all(replicas.share()[ns] == "op-a" for ns in NAMESPACES)
    assert leases(field_selector=f"metadata.name={lease_name('op-c')}") == []
    print(f"crash taken over {time.monotonic() - killed:.2f}s after the kill")

    # A newcomer takes about half, only from a, after a has made room for it.
    replicas.start("op-d")
    took = await _within(5, lambda: replicas.settled(("op-a", "op-d")), "d takes a share")
    share = replicas.share()
    mine = [ns for ns, o in share.items() if o == "op-d"]
    assert 10 <= len(mine) <= 40, len(mine)
    assert all(o == "op-a" for ns, o in share.items() if ns not in mine)
    print(f"newcomer owned its share after {took:.2f}s")

    await replicas.close()
    replicas.dead.update(replicas.loops)
    assert leases(label_selector=SHARD_SELECTOR) == []  # clean stops release their Leases


async def test_lease_writes_carry_microsecond_times(kubeconfig: Path, lease_namespace: str) -> None:
    """The API server takes our MicroTimes even at whole seconds (the client's model would
    drop the fraction, which is refused)."""
    api = LeaseApi(new_api_client(str(kubeconfig)), lease_namespace)
    try:
        at = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
        created = parse_lease(await api.create(lease_body("op-t", "inc", 10, at, [])))
        assert created is not None
        assert created.renew_time == at
        await api.delete(created.name, created.resource_version)
    finally:
        api.close()
