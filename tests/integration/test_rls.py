"""Row-level security, proven by negative tests: sba_app sees and writes only its tenant.

Each test connects as the application role sba_app (what the API and the
operator use), seeds one row per tenant-scoped table for two tenants through
the repositories, then tries to reach the other tenant's rows with raw SQL.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import pytest
import pytest_asyncio

from sba_store.agui import AguiRunRepository
from sba_store.artifacts import ArtifactRepository
from sba_store.audit import AuditRepository
from sba_store.db import Pool
from sba_store.events import EventRepository
from sba_store.idempotency import IdempotencyRepository
from sba_store.knowledge import KnowledgeRepository
from sba_store.records import NewEvent
from sba_store.roles import APP_ROLE
from sba_store.runs import RunRepository
from sba_store.tool_calls import ToolCallRepository

pytestmark = pytest.mark.integration

# Every tenant-scoped table and the column its policy keys on.
TABLES: Final = {
    "tenants": "id",
    "runs": "tenant_id",
    "run_events": "tenant_id",
    "tool_calls": "tenant_id",
    "artifacts": "tenant_id",
    "audit_log": "tenant_id",
    "knowledge_documents": "tenant_id",
    "knowledge_chunks": "tenant_id",
    "idempotency_keys": "tenant_id",
    "agui_runs": "tenant_id",
}
# How many of UPDATE and DELETE sba_app is granted on each table (the rest are refused).
GRANTED_WRITES: Final = {
    "tenants": 1,
    "runs": 1,
    "run_events": 0,
    "tool_calls": 1,
    "artifacts": 0,
    "audit_log": 0,
    "knowledge_documents": 1,
    "knowledge_chunks": 0,
    "idempotency_keys": 2,
    "agui_runs": 0,
}
SQLSTATE_INSUFFICIENT_PRIVILEGE: Final = "42501"


@dataclass(frozen=True)
class Seeded:
    tenant: str
    run_id: uuid.UUID
    document_id: uuid.UUID


async def _seed(pool: Pool, tenant: str) -> Seeded:
    """One row in every tenant-scoped table, written the way the application writes."""
    run_id = uuid.uuid4()
    await RunRepository(pool).upsert(
        run_id=run_id,
        tenant_id=tenant,
        namespace=f"tenant-{tenant}",
        name="run-1",
        prompt="secret prompt",
        spec={"tenant": tenant},
    )
    await EventRepository(pool).append(run_id, tenant, [NewEvent("k1", "run.pending")])
    await ToolCallRepository(pool).record_start(
        run_id=run_id,
        step_id="s1",
        attempt=1,
        tool="knowledge.search",
        tool_version="1",
        tenant_id=tenant,
        params={"query": "q"},
    )
    await ArtifactRepository(pool).put(
        tenant_id=tenant,
        run_id=run_id,
        step_id="s1",
        title="Report",
        content_type="text/plain",
        content=b"confidential",
    )
    await AuditRepository(pool).append(
        tenant_id=tenant, actor="alice", action="run.create", target=str(run_id)
    )
    document_id = await KnowledgeRepository(pool).add_document(
        tenant_id=tenant,
        title="Doc",
        source=None,
        content="confidential text",
        metadata=None,
        chunks=[("confidential text", [1.0] + [0.0] * 255)],
    )
    await IdempotencyRepository(pool).claim(
        tenant_id=tenant,
        key="k1",
        method="POST",
        path="/api/v1/runs",
        request_hash="h",
        ttl_seconds=3600,
        in_flight_timeout_seconds=60,
    )
    await AguiRunRepository(pool).add(tenant, "thread-1", "agui-run-1", run_id, 0)
    return Seeded(tenant, run_id, document_id)


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(pg_pool: Pool) -> tuple[Seeded, Seeded]:
    suffix = uuid.uuid4().hex[:8]
    return await _seed(pg_pool, f"rls-a-{suffix}"), await _seed(pg_pool, f"rls-b-{suffix}")


@pytest_asyncio.fixture(loop_scope="session")
async def app_conn(app_dsn: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A raw connection as sba_app (no codecs: these tests only count rows)."""
    conn = await asyncpg.connect(app_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _as_tenant(
    conn: asyncpg.Connection[asyncpg.Record], tenant: str, sql: str, *args: Any
) -> Any:
    """Run `sql` in a transaction with `tenant` set (as sba_store.db.tenant_transaction does)."""
    async with conn.transaction():
        await conn.execute("select set_tenant($1)", tenant)
        if sql.lstrip().startswith("select"):
            return await conn.fetch(sql, *args)
        return await conn.execute(sql, *args)


def _refused(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == SQLSTATE_INSUFFICIENT_PRIVILEGE


async def test_the_app_role_is_unprivileged(app_conn: asyncpg.Connection[asyncpg.Record]) -> None:
    row = await app_conn.fetchrow(
        "select current_user as me, rolsuper, rolbypassrls from pg_roles"
        " where rolname = current_user"
    )
    assert row is not None
    assert (row["me"], row["rolsuper"], row["rolbypassrls"]) == (APP_ROLE, False, False)
    owners = await app_conn.fetch(
        "select tablename from pg_tables where schemaname = 'public' and tableowner = current_user"
    )
    assert owners == []
    # Every tenant-scoped table has RLS enabled and forced.
    flags = await app_conn.fetch(
        "select relname, relrowsecurity, relforcerowsecurity from pg_class"
        " where relname = any($1::text[]) and relkind = 'r'",
        list(TABLES),
    )
    assert {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"]) for r in flags} == {
        table: (True, True) for table in TABLES
    }


@pytest.mark.parametrize("table", list(TABLES))
async def test_other_tenants_rows_are_invisible(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], table: str
) -> None:
    a, b = seeded
    column = TABLES[table]
    mine = await _as_tenant(app_conn, a.tenant, f"select {column} from {table}")
    assert mine, f"{table}: tenant A sees none of its own rows"
    assert {r[column] for r in mine} == {a.tenant}
    # Even asking for B's rows by name returns nothing.
    theirs = await _as_tenant(
        app_conn, a.tenant, f"select count(*) as n from {table} where {column} = $1", b.tenant
    )
    assert theirs[0]["n"] == 0


@pytest.mark.parametrize("table", list(TABLES))
async def test_no_tenant_set_sees_nothing(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], table: str
) -> None:
    assert await app_conn.fetchval(f"select count(*) from {table}") == 0
    # After a tenant transaction ends its setting is gone (transaction-local).
    await _as_tenant(app_conn, seeded[0].tenant, "select 1")
    assert await app_conn.fetchval(f"select count(*) from {table}") == 0
    assert await app_conn.fetchval("select current_setting('app.current_tenant', true)") in (
        None,
        "",
    )


@pytest.mark.parametrize("table", list(TABLES))
async def test_other_tenants_rows_cannot_be_changed(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], table: str
) -> None:
    """UPDATE and DELETE of B's rows under A's context touch nothing (or lack the grant)."""
    a, b = seeded
    column = TABLES[table]
    outcomes: list[str] = []
    for statement in (
        f"update {table} set {column} = {column} where {column} = $1",
        f"delete from {table} where {column} = $1",
    ):
        try:
            outcomes.append(await _as_tenant(app_conn, a.tenant, statement, b.tenant))
        except asyncpg.InsufficientPrivilegeError as exc:
            outcomes.append(str(exc))  # no grant at all: refused outright
    granted = [o for o in outcomes if not o.startswith("permission denied")]
    assert len(granted) == GRANTED_WRITES[table], outcomes
    assert all(o in ("UPDATE 0", "DELETE 0") for o in granted), outcomes
    # B's rows are all still there, as B sees them.
    rows = await _as_tenant(app_conn, b.tenant, f"select {column} from {table}")
    assert rows
    assert {r[column] for r in rows} == {b.tenant}


# table -> (statement, its arguments given the tenant_id to write and the seeded rows to point at)
_INSERTS: Final[dict[str, tuple[str, Callable[[str, Seeded], list[Any]]]]] = {
    "tenants": ("insert into tenants (id, display_name) values ($1, 'x')", lambda t, s: [t]),
    "runs": (
        "insert into runs (id, tenant_id, namespace, name, prompt) values ($2, $1, 'n', 'r', 'p')",
        lambda t, s: [t, uuid.uuid4()],
    ),
    "run_events": (
        "insert into run_events (run_id, seq, tenant_id, type) values ($2, 99, $1, 'x')",
        lambda t, s: [t, s.run_id],
    ),
    "tool_calls": (
        "insert into tool_calls (tenant_id, run_id, step_id, attempt, tool)"
        " values ($1, $2, 'x', 9, 'x')",
        lambda t, s: [t, s.run_id],
    ),
    "artifacts": (
        "insert into artifacts (tenant_id, run_id, title, content_type, content, size_bytes,"
        " sha256) values ($1, $2, 'x', 'text/plain', '', 0, $3)",
        lambda t, s: [t, s.run_id, hashlib.sha256(b"").hexdigest()],
    ),
    "audit_log": (
        "insert into audit_log (tenant_id, actor, action) values ($1, 'mallory', 'x')",
        lambda t, s: [t],
    ),
    "knowledge_documents": (
        "insert into knowledge_documents (tenant_id, title, content) values ($1, 'x', 'x')",
        lambda t, s: [t],
    ),
    "knowledge_chunks": (
        "insert into knowledge_chunks (tenant_id, document_id, ord, content, embedding)"
        " values ($1, $2, 9, 'x', array_fill(0.5::real, array[256])::vector)",
        lambda t, s: [t, s.document_id],
    ),
    "idempotency_keys": (
        "insert into idempotency_keys (tenant_id, key, method, path, request_hash, expires_at)"
        " values ($1, 'x', 'POST', '/x', 'h', now() + interval '1 hour')",
        lambda t, s: [t],
    ),
    "agui_runs": (
        "insert into agui_runs (tenant_id, thread_id, agui_run_id, run_id, segment)"
        " values ($1, 'x', 'x', $2, 9)",
        lambda t, s: [t, s.run_id],
    ),
}


@pytest.mark.parametrize("table", list(TABLES))
async def test_inserting_for_another_tenant_is_refused(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], table: str
) -> None:
    """The policy's WITH CHECK refuses B's tenant_id under A's context, and with no tenant."""
    a, b = seeded
    sql, args = _INSERTS[table]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await _as_tenant(app_conn, a.tenant, sql, *args(b.tenant, b))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await app_conn.execute(sql, *args(b.tenant, b))


@pytest.mark.parametrize(
    "table", ["run_events", "tool_calls", "artifacts", "knowledge_chunks", "agui_runs"]
)
async def test_own_rows_cannot_hang_off_another_tenants_parent(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], table: str
) -> None:
    """Tenant A's row pointing at B's run or document fails like a missing parent.

    Foreign-key checks bypass RLS; the composite (id, tenant_id) keys of 0008
    make the child's tenant match its parent's, so B's ids are no oracle.
    """
    a, b = seeded
    sql, args = _INSERTS[table]
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _as_tenant(app_conn, a.tenant, sql, *args(a.tenant, b))


async def test_row_security_cannot_be_switched_off(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded]
) -> None:
    # row_security = off does not bypass policies; it makes such queries fail.
    async with app_conn.transaction():
        await app_conn.execute("set local row_security = off")
        await app_conn.execute("select set_tenant($1)", seeded[0].tenant)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await app_conn.fetch("select * from runs")


@pytest.mark.parametrize(
    "statement",
    [
        "alter table runs disable row level security",
        "alter table runs no force row level security",
        "drop policy tenant_isolation on runs",
        "create policy everything on runs using (true)",
        "alter table audit_log disable trigger audit_log_no_update_delete",
        "set role sba_run_lookup",
        "alter role sba_app bypassrls",
        "grant sba_run_lookup to sba_app",
    ],
)
async def test_the_app_role_cannot_loosen_security(
    app_conn: asyncpg.Connection[asyncpg.Record], statement: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await app_conn.execute(statement)
    assert _refused(caught.value), caught.value


@pytest.mark.parametrize(
    "statement",
    [
        "update audit_log set actor = 'mallory'",
        "delete from audit_log",
        "truncate audit_log",
    ],
)
async def test_the_app_role_cannot_rewrite_the_audit_log(
    app_conn: asyncpg.Connection[asyncpg.Record], seeded: tuple[Seeded, Seeded], statement: str
) -> None:
    a = seeded[0]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await _as_tenant(app_conn, a.tenant, statement)
    rows = await _as_tenant(app_conn, a.tenant, "select actor from audit_log")
    assert [r["actor"] for r in rows] == ["alice"]


async def test_run_owner_names_the_tenant_without_exposing_the_row(
    app_conn: asyncpg.Connection[asyncpg.Record], pg_pool: Pool, seeded: tuple[Seeded, Seeded]
) -> None:
    a, b = seeded
    # Under A's context, B's run is invisible, yet its owner is known: a 403, not a 404.
    assert await _as_tenant(app_conn, a.tenant, "select id from runs where id = $1", b.run_id) == []
    async with app_conn.transaction():
        await app_conn.execute("select set_tenant($1)", a.tenant)
        assert await app_conn.fetchval("select run_owner($1)", b.run_id) == b.tenant
    assert await app_conn.fetchval("select run_owner($1)", uuid.uuid4()) is None
    runs = RunRepository(pg_pool)
    assert await runs.owner(b.run_id) == b.tenant
    assert await runs.get(b.run_id, tenant_id=a.tenant) is None
    # The function runs as sba_run_lookup, which may read runs(id, tenant_id) only.
    definer = await app_conn.fetchrow(
        "select p.prosecdef, r.rolname, p.proconfig from pg_proc p"
        " join pg_roles r on r.oid = p.proowner where p.proname = 'run_owner'"
    )
    assert definer is not None
    assert (definer["prosecdef"], definer["rolname"]) == (True, "sba_run_lookup")
    assert any(c.startswith("search_path=") for c in definer["proconfig"])
    readable = await app_conn.fetch(
        "select attname from pg_attribute where attrelid = 'runs'::regclass"
        " and attnum > 0 and not attisdropped"
        " and has_column_privilege('sba_run_lookup', attrelid, attnum, 'SELECT')"
    )
    assert sorted(r["attname"] for r in readable) == ["id", "tenant_id"]


async def test_the_repositories_stay_within_the_tenant(
    pg_pool: Pool, seeded: tuple[Seeded, Seeded]
) -> None:
    """Through the store API, asking for B's run with A's tenant finds nothing at all."""
    a, b = seeded
    assert await RunRepository(pg_pool).get(b.run_id, tenant_id=a.tenant) is None
    assert await EventRepository(pg_pool).list_after(b.run_id, tenant_id=a.tenant) == []
    assert await ToolCallRepository(pg_pool).latest_successful(b.run_id, tenant_id=a.tenant) == {}
    assert await ArtifactRepository(pg_pool).list_for_run(b.run_id, tenant_id=a.tenant) == []
    knowledge = KnowledgeRepository(pg_pool)
    assert await knowledge.get_document(a.tenant, b.document_id) is None
    assert await knowledge.delete_document(a.tenant, b.document_id) is False
    assert await knowledge.get_document(b.tenant, b.document_id) is not None
