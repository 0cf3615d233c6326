"""Listing, downloading and (for tool pods) storing artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sba_api.errors import NotFound
from sba_api.schemas import ArtifactList, ArtifactUploaded, ArtifactView
from sba_api.services._boundary import store_boundary
from sba_api.services.runs import API_PREFIX, RunService, parse_run_id
from sba_store.artifacts import ArtifactRepository
from sba_store.records import ArtifactRecord


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


@dataclass(frozen=True)
class ArtifactContent:
    record: ArtifactRecord
    content: bytes


def _view(record: ArtifactRecord) -> ArtifactView:
    run_id = str(record.run_id)
    return ArtifactView(
        id=str(record.id),
        run_id=run_id,
        step_id=record.step_id,
        title=record.title,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        created_at=record.created_at,
        download=f"{API_PREFIX}/runs/{run_id}/artifacts/{record.id}",
    )


class ArtifactService:
    def __init__(self, artifacts: ArtifactRepository, runs: RunService) -> None:
        self._artifacts = artifacts
        self._runs = runs

    async def list_for_run(self, raw_run_id: str) -> ArtifactList:
        run = await self._runs.record(parse_run_id(raw_run_id))
        with store_boundary("list artifacts"):
            records = await self._artifacts.list_for_run(run.id, tenant_id=run.tenant_id)
        return ArtifactList(items=[_view(r) for r in records])

    async def download(self, raw_run_id: str, raw_artifact_id: str) -> ArtifactContent:
        run = await self._runs.record(parse_run_id(raw_run_id))
        try:
            artifact_id = UUID(raw_artifact_id)
        except ValueError as exc:
            raise ArtifactNotFound(f"artifact {raw_artifact_id!r} not found") from exc
        with store_boundary("read the artifact"):
            found = await self._artifacts.get(artifact_id, tenant_id=run.tenant_id)
        if found is None or found[0].run_id != run.id:
            raise ArtifactNotFound(f"artifact {raw_artifact_id} not found in run {run.id}")
        return ArtifactContent(record=found[0], content=found[1])

    async def store(
        self,
        *,
        tenant: str,
        run_id: UUID,
        step_id: str,
        title: str,
        content_type: str,
        content: bytes,
    ) -> ArtifactUploaded:
        with store_boundary("store the artifact"):
            record = await self._artifacts.put(
                tenant_id=tenant,
                run_id=run_id,
                step_id=step_id,
                title=title,
                content_type=content_type,
                content=content,
            )
        return ArtifactUploaded(
            artifact_id=str(record.id),
            title=record.title,
            content_type=record.content_type,
            size_bytes=record.size_bytes,
            sha256=record.sha256,
        )
