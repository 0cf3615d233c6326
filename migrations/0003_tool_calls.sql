-- One row per tool-step attempt. The unique key makes result submission
-- idempotent: a retried POST of the same attempt's result changes nothing.
-- success is null while the attempt is running.

create table if not exists tool_calls (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    text not null,
    run_id       uuid not null references runs (id) on delete cascade,
    step_id      text not null,
    attempt      integer not null check (attempt >= 0),
    tool         text not null,
    tool_version text not null default '',
    params       jsonb not null default '{}'::jsonb,
    result       jsonb,
    error        text,
    success      boolean,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    duration_ms  integer check (duration_ms >= 0),
    unique (run_id, step_id, attempt)
);

create index if not exists tool_calls_tenant_idx on tool_calls (tenant_id);
