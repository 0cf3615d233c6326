-- Files produced by tool steps (rendered documents and the like).

create table if not exists artifacts (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    text not null,
    run_id       uuid not null references runs (id) on delete cascade,
    step_id      text,
    title        text not null,
    content_type text not null,
    content      bytea not null,
    size_bytes   bigint not null check (size_bytes >= 0),
    sha256       text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz not null default now()
);

create index if not exists artifacts_run_idx on artifacts (run_id, created_at);
create index if not exists artifacts_tenant_idx on artifacts (tenant_id);
