"""What a reconcile reads of the cluster: from memory (watch-fed indexes), not per request.

`IndexedReads` answers from Kopf's indexes (`sba_operator.handlers.indexes`), which
Kopf fills from one watch per resource kind and has complete before any handler
runs. What the watches have not brought back yet, our own writes fill in: the
AgentRun status this process just wrote (its response is newer than the index until
the MODIFIED event arrives), the Jobs it just created, the Approvals it just
answered. Without that, a reconcile woken by a Job event a moment after our status
write would decide on the status before it and lose the write to a 409.

A 409 on a status write means the memory is behind somebody else's write: the retry
reads that one AgentRun directly (`fresh=True`), the only GET left on the path.

`DirectReads` answers the same questions with API requests: the behaviour without
indexes, kept for processes and tests that have none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final, Protocol

from sba_core import group
from sba_operator.kube.client import JOB_NAME_LABEL, Kube

Raw = dict[str, Any]


class ClusterReads(Protocol):
    """The reads of a run's reconcile."""

    async def agentrun(self, namespace: str, name: str, *, fresh: bool = False) -> Raw | None: ...

    async def agentruns(self, namespace: str) -> list[Raw]: ...

    async def unanswered_approvals(self, namespace: str, run: str) -> list[Raw]: ...

    async def tenant(self, name: str) -> Raw | None: ...

    async def run_jobs(self, namespace: str, run_uid: str) -> list[Raw]: ...

    async def job(self, namespace: str, name: str) -> Raw | None: ...

    async def job_pods(self, namespace: str, job: str) -> list[Raw]: ...

    def wrote_agentrun(self, obj: Mapping[str, Any]) -> None:
        """The AgentRun as our write returned it."""

    def created_job(self, obj: Mapping[str, Any]) -> None:
        """A Job as our create returned it."""

    def answered_approval(self, namespace: str, name: str) -> None:
        """An Approval whose outcome we just wrote."""

    def forget_agentrun(self, namespace: str, name: str) -> None:
        """The run was deleted: its last write must not resurrect it."""


def _unanswered(raw: Mapping[str, Any]) -> bool:
    meta = raw.get("metadata") or {}
    return not (raw.get("status") or {}).get("outcome") and not meta.get("deletionTimestamp")


class DirectReads:
    """Every read an API request (no indexes)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def agentrun(self, namespace: str, name: str, *, fresh: bool = False) -> Raw | None:
        return await self._kube.get_agentrun(namespace, name)

    async def agentruns(self, namespace: str) -> list[Raw]:
        return await self._kube.list_agentruns(namespace)

    async def unanswered_approvals(self, namespace: str, run: str) -> list[Raw]:
        return [
            raw
            for raw in await self._kube.list_approvals(namespace)
            if (raw.get("spec") or {}).get("run") == run and _unanswered(raw)
        ]

    async def tenant(self, name: str) -> Raw | None:
        return await self._kube.get_tenant(name)

    async def run_jobs(self, namespace: str, run_uid: str) -> list[Raw]:
        return await self._kube.list_run_jobs(namespace, run_uid)

    async def job(self, namespace: str, name: str) -> Raw | None:
        return await self._kube.get_job(namespace, name)

    async def job_pods(self, namespace: str, job: str) -> list[Raw]:
        return await self._kube.list_job_pods(namespace, job)

    def wrote_agentrun(self, obj: Mapping[str, Any]) -> None:
        pass

    def created_job(self, obj: Mapping[str, Any]) -> None:
        pass

    def answered_approval(self, namespace: str, name: str) -> None:
        pass

    def forget_agentrun(self, namespace: str, name: str) -> None:
        pass


IndexLike = Mapping[Any, Collection[Mapping[str, Any]]]
"""A Kopf index: key -> the values of every object indexed under it."""


class RunIndexes(Protocol):
    """The five indexes `sba_operator.handlers.indexes` registers, keyed as below."""

    @property
    def agentruns(self) -> IndexLike: ...

    @property
    def approvals(self) -> IndexLike: ...

    @property
    def tenants(self) -> IndexLike: ...

    @property
    def jobs(self) -> IndexLike: ...

    @property
    def pods(self) -> IndexLike: ...


# -- what each index holds, under which keys (Kopf calls these on every watch event) --------


def index_agentrun(raw: Mapping[str, Any]) -> dict[Any, Raw]:
    """Under its namespace (the queue's peers) and (namespace, name)."""
    meta = raw.get("metadata") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    body = dict(raw)
    return {ns: body, (ns, name): body}


def index_approval(raw: Mapping[str, Any]) -> dict[Any, Raw]:
    """Unanswered Approvals under (namespace, run); answered ones leave the index."""
    if not _unanswered(raw):
        return {}
    meta = raw.get("metadata") or {}
    run = str((raw.get("spec") or {}).get("run", ""))
    return {(str(meta.get("namespace", "")), run): dict(raw)}


def index_tenant(raw: Mapping[str, Any]) -> dict[Any, Raw]:
    return {str((raw.get("metadata") or {}).get("name", "")): dict(raw)}


def index_job(raw: Mapping[str, Any]) -> dict[Any, Raw]:
    """Our tool Jobs under ("run", namespace, run uid) and ("job", namespace, name)."""
    meta = raw.get("metadata") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    body = dict(raw)
    return {("run", ns, _run_uid(raw)): body, ("job", ns, name): body}


def index_pod(raw: Mapping[str, Any]) -> dict[Any, Raw]:
    """A tool pod's name and container states under (namespace, Job name): all a failed
    step's termination message needs, not the whole pod."""
    meta = raw.get("metadata") or {}
    job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
    if not job:
        return {}
    status = raw.get("status") or {}
    slim = {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "status": {
            "phase": status.get("phase"),
            "containerStatuses": status.get("containerStatuses") or [],
        },
    }
    return {(str(meta.get("namespace", "")), str(job)): slim}


def resource_version(obj: Mapping[str, Any] | None) -> int:
    """The object's resourceVersion as a number (-1 when absent or not a number).

    Opaque by contract, but one kube-apiserver's versions are etcd revisions, and
    ordering our write's response against the watch's copy is all this is used for.
    """
    if obj is None:
        return -1
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except ValueError:
        return -1


def _values(index: IndexLike, key: Any) -> Iterable[Mapping[str, Any]]:
    return index.get(key, ())


MAX_OVERLAY: Final = 10_000
"""Own writes remembered at most (each is dropped once its watch event is indexed)."""


class IndexedReads:
    """Reads from the watch-fed indexes, corrected by this process's own recent writes."""

    def __init__(self, indexes: RunIndexes, kube: Kube) -> None:
        self._idx = indexes
        self._kube = kube
        self._runs: dict[tuple[str, str], Raw] = {}
        """(namespace, name) -> the AgentRun our last status write returned."""
        self._jobs: dict[tuple[str, str], Raw] = {}
        """(namespace, name) -> a Job we created that the index may not hold yet."""
        self._answered: set[tuple[str, str]] = set()
        """(namespace, name) of Approvals we answered (the index may still say unanswered)."""

    # -- AgentRuns ---------------------------------------------------------------------------

    async def agentrun(self, namespace: str, name: str, *, fresh: bool = False) -> Raw | None:
        key = (namespace, name)
        if fresh:
            obj = await self._kube.get_agentrun(namespace, name)
            self._runs.pop(key, None)
            if obj is not None:
                self._remember(self._runs, key, obj)
            return obj
        indexed = next(iter(_values(self._idx.agentruns, key)), None)
        mine = self._runs.get(key)
        if mine is None:
            return dict(indexed) if indexed is not None else None
        if indexed is None:
            # Not (yet, or no longer) watched: our write is all we know, unless it is gone.
            return mine
        if _uid(indexed) != _uid(mine) or resource_version(indexed) >= resource_version(mine):
            del self._runs[key]  # the watch caught up (or it is another object now)
            return dict(indexed)
        return mine

    async def agentruns(self, namespace: str) -> list[Raw]:
        out: list[Raw] = []
        for indexed in _values(self._idx.agentruns, namespace):
            meta = indexed.get("metadata") or {}
            mine = self._runs.get((namespace, str(meta.get("name", ""))))
            if (
                mine is not None
                and _uid(mine) == _uid(indexed)
                and resource_version(mine) > resource_version(indexed)
            ):
                out.append(mine)
            else:
                out.append(dict(indexed))
        return out

    def wrote_agentrun(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._remember(self._runs, key, dict(obj))

    def forget_agentrun(self, namespace: str, name: str) -> None:
        self._runs.pop((namespace, name), None)

    # -- Approvals ---------------------------------------------------------------------------

    async def unanswered_approvals(self, namespace: str, run: str) -> list[Raw]:
        out: list[Raw] = []
        for raw in _values(self._idx.approvals, (namespace, run)):
            name = str((raw.get("metadata") or {}).get("name", ""))
            if (namespace, name) not in self._answered:
                out.append(dict(raw))
        return out

    def answered_approval(self, namespace: str, name: str) -> None:
        if len(self._answered) >= MAX_OVERLAY:
            self._prune_answered()
        self._answered.add((namespace, name))

    def _prune_answered(self) -> None:
        """Drop answers the index reflects (the Approval left the unanswered index)."""
        still = set()
        for ns, run_values in ((k[0], v) for k, v in self._idx.approvals.items()):
            for raw in run_values:
                still.add((ns, str((raw.get("metadata") or {}).get("name", ""))))
        self._answered &= still

    # -- Tenants -----------------------------------------------------------------------------

    async def tenant(self, name: str) -> Raw | None:
        found = next(iter(_values(self._idx.tenants, name)), None)
        return dict(found) if found is not None else None

    # -- Jobs and their pods -----------------------------------------------------------------

    async def run_jobs(self, namespace: str, run_uid: str) -> list[Raw]:
        found = {
            str((raw.get("metadata") or {}).get("name", "")): dict(raw)
            for raw in _values(self._idx.jobs, ("run", namespace, run_uid))
        }
        for (ns, name), job in list(self._jobs.items()):
            if ns != namespace or _run_uid(job) != run_uid:
                continue
            if name in found or ("job", ns, name) in self._idx.jobs:
                del self._jobs[(ns, name)]  # indexed now: the watch knows better
            else:
                found[name] = job
        return list(found.values())

    async def job(self, namespace: str, name: str) -> Raw | None:
        indexed = next(iter(_values(self._idx.jobs, ("job", namespace, name))), None)
        if indexed is not None:
            self._jobs.pop((namespace, name), None)
            return dict(indexed)
        return self._jobs.get((namespace, name))

    def created_job(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._remember(self._jobs, key, dict(obj))

    async def job_pods(self, namespace: str, job: str) -> list[Raw]:
        return [dict(raw) for raw in _values(self._idx.pods, (namespace, job))]

    @staticmethod
    def _remember(store: dict[tuple[str, str], Raw], key: tuple[str, str], obj: Raw) -> None:
        if key not in store and len(store) >= MAX_OVERLAY:
            store.pop(next(iter(store)))  # the oldest: a watch long behind is a relist away
        store[key] = obj


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def _run_uid(job: Mapping[str, Any]) -> str:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return str(labels.get(group.LABEL_RUN_UID, ""))
