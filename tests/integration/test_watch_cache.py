"""The API's watch cache of AgentRuns against the real kube-apiserver: it follows creates,
changes and deletes, and the API process reads its own writes through it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from sba_api.kube import KubeClient, agentrun_cache
from sba_api.watch_cache import WatchCache
from sba_core import group
from tests.fixtures.controlplane import Kubectl

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("the cache never caught up")


@pytest.fixture(scope="module")
def namespace(kube_api: client.ApiClient, kubectl: Kubectl) -> Iterator[str]:
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    name = f"wc-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def cache(kubeconfig: Path) -> Iterator[WatchCache]:
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    watched = agentrun_cache(api)
    assert not watched.synced
    watched.start()
    assert watched.wait_synced(10)
    yield watched
    watched.stop()
    api.close()


def _run(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": group.API_VERSION,
        "kind": group.AGENTRUN_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenant": "wc", "prompt": "cached?"},
    }


def test_the_cache_follows_creates_changes_and_deletes(
    kube_api: client.ApiClient, namespace: str, cache: WatchCache
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    name = f"run-{uuid.uuid4().hex[:6]}"
    custom.create_namespaced_custom_object(
        group.GROUP, group.VERSION, namespace, group.AGENTRUN_PLURAL, _run(name, namespace)
    )
    _eventually(lambda: cache.get(namespace, name))
    custom.patch_namespaced_custom_object(
        group.GROUP,
        group.VERSION,
        namespace,
        group.AGENTRUN_PLURAL,
        name,
        {"metadata": {"labels": {"seen": "yes"}}},
    )
    _eventually(
        lambda: (
            ((cache.get(namespace, name) or {}).get("metadata") or {}).get("labels")
            == {"seen": "yes"}
        )
    )
    custom.delete_namespaced_custom_object(
        group.GROUP, group.VERSION, namespace, group.AGENTRUN_PLURAL, name
    )
    _eventually(lambda: cache.get(namespace, name) is None)


async def test_the_api_reads_its_own_writes_through_the_cache(
    kubeconfig: Path, namespace: str, cache: WatchCache
) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    kube = KubeClient(api, runs_cache=cache)
    try:
        name = f"run-{uuid.uuid4().hex[:6]}"
        created = await kube.create_agent_run(namespace, _run(name, namespace))
        # At once, before the watch can have delivered it: never "not found".
        read = await kube.read_agent_run(namespace, name)
        assert read is not None
        assert read["metadata"]["uid"] == created["metadata"]["uid"]
        patched = await kube.patch_agent_run(
            namespace, name, {"metadata": {"annotations": {"v": "2"}}}
        )
        assert patched is not None
        again = await kube.read_agent_run(namespace, name)
        assert again is not None
        assert again["metadata"]["annotations"]["v"] == "2"  # never older than our write
        _eventually(lambda: cache.get(namespace, name) is not None)
        assert len(cache) >= 1
        await kube.delete_agent_run(namespace, name)
    finally:
        kube.close()
