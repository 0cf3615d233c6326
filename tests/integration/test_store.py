"""The durable store against a real Postgres with pgvector."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sba_core.knowledge import HashingEmbedder, chunk_text
from sba_store.artifacts import ArtifactRepository
from sba_store.audit import AuditRepository
from sba_store.db import Pool
from sba_store.events import EventRepository
from sba_store.knowledge import KnowledgeRepository
from sba_store.migrate import MigrationError, migrate_dsn, migrations_dir
from sba_store.records import NewEvent, RunRecord
from sba_store.runs import RunRepository
from sba_store.tenants import TenantRepository
from sba_store.tool_calls import ToolCallRepository

pytestmark = pytest.mark.integration


async def _new_run(pool: Pool, tenant: str = "acme") -> RunRecord:
    run_id = uuid.uuid4()
    return await RunRepository(pool).upsert(
        run_id=run_id,
        tenant_id=tenant,
        namespace=f"tenant-{tenant}",
        name=f"run-{run_id.hex[:8]}",
        prompt="write a report",
        spec={"tenant": tenant, "prompt": "write a report"},
        user_id="alice",
    )


# -- migrations -------------------------------------------------------------------


async def test_migrations_are_applied_once(postgres_dsn: str) -> None:
    # The fixture already migrated this database: a second run applies nothing.
    assert await migrate_dsn(postgres_dsn) == []
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = await conn.fetch("select version from schema_migrations order by version")
    finally:
        await conn.close()
    assert [row["version"] for row in versions] == list(range(1, len(versions) + 1))
    assert len(versions) >= 6


async def test_changed_migration_is_detected(postgres_dsn: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    first = sorted(copy.glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate_dsn(postgres_dsn, copy)


async def test_concurrent_migration_runners_serialise(postgres_dsn: str) -> None:
    results = await asyncio.gather(*(migrate_dsn(postgres_dsn) for _ in range(4)))
    assert all(applied == [] for applied in results)


# -- runs -------------------------------------------------------------------------


async def test_run_upsert_get_and_list(pg_pool: Pool) -> None:
    runs = RunRepository(pg_pool)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    first = await _new_run(pg_pool, tenant)
    assert first.phase == "pending"
    assert first.spec["tenant"] == tenant
    # Upsert again without a phase keeps the stored one; with a phase updates it.
    await runs.set_phase(first.id, "executing", tenant_id=tenant)
    again = await runs.upsert(
        run_id=first.id,
        tenant_id=tenant,
        namespace=first.namespace,
        name=first.name,
        prompt=first.prompt,
        spec=first.spec,
    )
    assert again.phase == "executing"
    assert again.updated_at >= first.updated_at
    assert await runs.get_by_name(first.namespace, first.name, tenant_id=tenant) == again
    assert await runs.get(first.id, tenant_id="someone-else") is None

    # The same name re-created (a new uid) is a new run; the name now finds it.
    successor = await runs.upsert(
        run_id=uuid.uuid4(),
        tenant_id=tenant,
        namespace=first.namespace,
        name=first.name,
        prompt="x",
        spec={},
    )
    assert successor.id != first.id
    assert await runs.get_by_name(first.namespace, first.name, tenant_id=tenant) == successor
    assert await runs.get_by_name(first.namespace, first.name, tenant_id="someone-else") is None
    assert await runs.get(first.id, tenant_id=tenant) is not None
    # owner() names the tenant of any run, and nobody for a run that does not exist.
    assert await runs.owner(first.id) == tenant
    assert await runs.owner(uuid.uuid4()) is None
    assert await runs.set_phase(first.id, "failed", tenant_id="someone-else") is None

    later = [await _new_run(pg_pool, tenant) for _ in range(4)]
    page1 = await runs.list_for_tenant(tenant, limit=3)
    assert [run.id for run in page1] == [run.id for run in reversed(later)][:3]
    last = page1[-1]
    page2 = await runs.list_for_tenant(tenant, limit=3, before=(last.created_at, last.id))
    assert [run.id for run in page2] == [later[0].id, successor.id, first.id]


# -- events -----------------------------------------------------------------------


async def test_event_append_assigns_gapless_seq_and_dedupes(pg_pool: Pool) -> None:
    events = EventRepository(pg_pool)
    run = await _new_run(pg_pool)
    batch = [NewEvent(f"k{i}", "step.started", "info", {"i": i}) for i in range(5)]
    inserted = await events.append(run.id, run.tenant_id, batch)
    assert [event.seq for event in inserted] == [1, 2, 3, 4, 5]
    assert inserted[2].payload == {"i": 2}

    # Replaying the batch, and a batch repeating its own key, insert nothing new.
    assert await events.append(run.id, run.tenant_id, batch) == []
    mixed = [NewEvent("k4", "x"), NewEvent("k5", "run.done"), NewEvent("k5", "run.done")]
    new = await events.append(run.id, run.tenant_id, mixed)
    assert [(event.seq, event.dedupe_key) for event in new] == [(6, "k5")]
    assert await events.last_seq(run.id, tenant_id=run.tenant_id) == 6
    assert await events.last_seq(run.id, tenant_id="other") == 0

    after = await events.list_after(run.id, after_seq=3, tenant_id=run.tenant_id)
    assert [event.seq for event in after] == [4, 5, 6]
    assert [
        event.seq for event in await events.list_after(run.id, 0, limit=2, tenant_id=run.tenant_id)
    ] == [1, 2]
    assert await events.list_after(run.id, 0, tenant_id="other") == []


async def test_concurrent_appends_give_a_gapless_sequence(pg_pool: Pool) -> None:
    events = EventRepository(pg_pool)
    run = await _new_run(pg_pool)

    async def writer(w: int) -> None:
        for i in range(10):
            batch = [NewEvent(f"w{w}-{i}-{j}", "tick", payload={"w": w}) for j in range(2)]
            await events.append(run.id, run.tenant_id, batch)

    await asyncio.gather(*(writer(w) for w in range(6)))
    stored = await events.list_after(run.id, 0, limit=1000, tenant_id=run.tenant_id)
    assert [event.seq for event in stored] == list(range(1, 121))
    assert len({event.dedupe_key for event in stored}) == 120
    assert await events.last_seq(run.id, tenant_id=run.tenant_id) == 120


# -- tool calls -------------------------------------------------------------------


async def test_tool_call_results_are_idempotent(pg_pool: Pool) -> None:
    calls = ToolCallRepository(pg_pool)
    run = await _new_run(pg_pool)
    common: dict[str, Any] = {
        "run_id": run.id,
        "step_id": "search",
        "tool": "knowledge.search",
        "tool_version": "1",
        "tenant_id": run.tenant_id,
        "params": {"query": "q"},
    }
    started = await calls.record_start(attempt=1, **common)
    assert started.success is None
    assert (await calls.record_start(attempt=1, **common)).id == started.id

    failed = await calls.record_result(
        attempt=1, result=None, success=False, error="timeout", duration_ms=30, **common
    )
    assert failed.id == started.id
    assert (failed.success, failed.error) == (False, "timeout")
    # A second result for the same attempt is ignored; the first one is returned.
    again = await calls.record_result(
        attempt=1, result={"hits": []}, success=True, error=None, duration_ms=5, **common
    )
    assert again == failed

    ok = await calls.record_result(
        attempt=2, result={"hits": [1, 2]}, success=True, error=None, duration_ms=12, **common
    )
    assert ok.result == {"hits": [1, 2]}
    assert ok.finished_at is not None
    tenant = run.tenant_id
    assert await calls.get(run.id, "search", 2, tenant_id=tenant) == ok
    assert await calls.get(run.id, "search", 2, tenant_id="other") is None
    assert await calls.get_by_id(ok.id, tenant_id=tenant) == ok
    assert await calls.get_by_id(ok.id, tenant_id="other") is None
    assert await calls.get(run.id, "search", 3, tenant_id=tenant) is None
    assert await calls.latest_successful(run.id, tenant_id="other") == {}
    latest = await calls.latest_successful(run.id, tenant_id=tenant)
    assert list(latest) == ["search"]
    assert latest["search"].attempt == 2


# -- artifacts --------------------------------------------------------------------


async def test_artifacts_round_trip(pg_pool: Pool) -> None:
    artifacts = ArtifactRepository(pg_pool)
    run = await _new_run(pg_pool)
    content = b"%PDF-1.7\n" + bytes(range(256)) * 40
    record = await artifacts.put(
        tenant_id=run.tenant_id,
        run_id=run.id,
        step_id="render",
        title="Report",
        content_type="application/pdf",
        content=content,
    )
    assert record.sha256 == hashlib.sha256(content).hexdigest()
    assert record.size_bytes == len(content)
    fetched = await artifacts.get(record.id, tenant_id=run.tenant_id)
    assert fetched == (record, content)
    assert await artifacts.get(record.id, tenant_id="other") is None
    assert await artifacts.list_for_run(run.id, tenant_id=run.tenant_id) == [record]
    assert await artifacts.list_for_run(run.id, tenant_id="other") == []


# -- audit log --------------------------------------------------------------------


async def test_audit_log_is_append_only(pg_pool: Pool, owner_pool: Pool) -> None:
    audit = AuditRepository(pg_pool)
    entry = await audit.append(
        tenant_id="acme",
        actor="alice",
        action="run.create",
        target="tenant-acme/run-1",
        request_id="req-1",
        payload={"ip": "10.0.0.1"},
    )
    assert entry.payload == {"ip": "10.0.0.1"}
    # Even the owner (a superuser here) is refused by the trigger; sba_app has no
    # UPDATE/DELETE/TRUNCATE grant at all (tests/integration/test_rls.py).
    async with owner_pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("update audit_log set actor = 'mallory' where id = $1", entry.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("delete from audit_log where id = $1", entry.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("truncate audit_log")
    assert (await audit.list_for_tenant("acme"))[0] == entry


# -- tenants ----------------------------------------------------------------------


async def test_tenant_upsert(pg_pool: Pool) -> None:
    tenants = TenantRepository(pg_pool)
    created = await tenants.upsert("globex", "Globex", "free")
    same = await tenants.upsert("globex", "Globex", "free")
    assert same == created
    changed = await tenants.upsert("globex", "Globex Corp", "pro")
    assert (changed.display_name, changed.plan) == ("Globex Corp", "pro")
    assert await tenants.get("globex") == changed
    assert await tenants.get("nobody") is None


# -- knowledge --------------------------------------------------------------------

DOCUMENTS = {
    "Resetting your password": (
        "If you forgot your password, open the sign-in page and choose 'Forgot password'. "
        "We email a reset link that is valid for 30 minutes. After the password reset, "
        "all other sessions are signed out."
    ),
    "Invoices and billing": (
        "Invoices are issued on the first day of each month. You can download past invoices "
        "as PDF from the billing page and change the card used for payment."
    ),
    "Deploying with Kubernetes": (
        "Our operator runs each agent step as a Kubernetes Job in the tenant's namespace. "
        "Jobs are retried with backoff and cleaned up after the run finishes."
    ),
    "Office plants": (
        "Water the ficus every week, keep the cactus dry, and rotate the orchids so they get "
        "even light from the windows."
    ),
}


async def _add(repo: KnowledgeRepository, tenant: str, title: str, body: str) -> uuid.UUID:
    embedder = HashingEmbedder()
    pieces = chunk_text(body, max_chars=200, overlap=40)
    vectors = await embedder.embed(pieces)
    return await repo.add_document(
        tenant_id=tenant,
        title=title,
        source=f"kb://{title}",
        content=body,
        metadata={"lang": "en"},
        chunks=list(zip(pieces, vectors, strict=True)),
    )


async def test_hybrid_search_finds_the_relevant_document(pg_pool: Pool) -> None:
    repo = KnowledgeRepository(pg_pool)
    embedder = HashingEmbedder()
    tenant = f"kb-{uuid.uuid4().hex[:8]}"
    ids = {title: await _add(repo, tenant, title, body) for title, body in DOCUMENTS.items()}
    assert await repo.count_documents(tenant) == len(DOCUMENTS)

    cases = {
        "how do I reset my password": "Resetting your password",
        "download invoices as PDF": "Invoices and billing",
        "kubernetes job retries": "Deploying with Kubernetes",
    }
    for query, title in cases.items():
        hits = await repo.search(tenant, query, embedder.embed_one(query), top_k=3)
        assert hits, query
        assert hits[0].document_id == ids[title], (query, hits)
        assert hits[0].title == title
        assert hits[0].vector_rank is not None
        assert hits[0].text_rank is not None
        assert len({hit.document_id for hit in hits}) == len(hits)  # one per document

    # With the embedder's similarity floor and stop words ignored, unrelated documents
    # drop out instead of filling up top_k; the best hit scores 1 (first in both lists).
    query = "What is the way to reset my password?"
    focused = await repo.search(
        tenant, query, embedder.embed_one(query), top_k=4, min_similarity=embedder.min_similarity
    )
    assert [hit.title for hit in focused] == ["Resetting your password"], focused
    assert focused[0].score == 1.0

    # A query without words still works (no text ranking, zero vector skipped).
    assert await repo.search(tenant, "?!", embedder.embed_one("?!"), top_k=3) == []


async def test_search_never_returns_another_tenants_chunks(pg_pool: Pool) -> None:
    repo = KnowledgeRepository(pg_pool)
    embedder = HashingEmbedder()
    mine, theirs = f"kb-{uuid.uuid4().hex[:8]}", f"kb-{uuid.uuid4().hex[:8]}"
    my_doc = await _add(repo, mine, "Office plants", DOCUMENTS["Office plants"])
    secret = "Resetting your password"
    await _add(repo, theirs, secret, DOCUMENTS[secret])

    query = "reset password link"
    hits = await repo.search(mine, query, embedder.embed_one(query), top_k=10, candidates=100)
    assert all(hit.document_id == my_doc for hit in hits)
    assert await repo.count_documents(mine) == 1

    # Deleting a document removes its chunks.
    assert await repo.delete_document(mine, my_doc)
    assert await repo.search(mine, "ficus", embedder.embed_one("ficus"), top_k=5) == []
    assert not await repo.delete_document(theirs, my_doc)
