-- The durable, ordered event log of a run. seq is assigned by the store under
-- a per-run lock and grows by exactly 1 (no gaps), so SSE clients can resume
-- with Last-Event-ID = seq. dedupe_key makes re-delivered events no-ops.

create table if not exists run_events (
    run_id     uuid not null references runs (id) on delete cascade,
    seq        bigint not null check (seq > 0),
    tenant_id  text not null,
    dedupe_key text,
    type       text not null,
    level      text not null default 'info',
    ts         timestamptz not null default now(),
    payload    jsonb not null default '{}'::jsonb,
    primary key (run_id, seq),
    unique (run_id, dedupe_key)
);

create index if not exists run_events_tenant_idx on run_events (tenant_id);
