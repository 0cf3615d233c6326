-- AG-UI threads: which of our runs an AG-UI client's (threadId, runId) means.
--
-- POST /api/v1/agui creates a run for a new RunAgentInput (segment 0) or resumes
-- an interrupted run (segment k: the AG-UI run after the run's k-th interrupt).
-- A thread's runs are found by (tenant, thread); a retried input with the same
-- runId finds its run instead of starting another; the AG-UI stream names each
-- segment by the client's runId.

create table if not exists agui_runs (
    tenant_id     text not null,
    thread_id     text not null check (length(thread_id) between 1 and 200),
    agui_run_id   text not null check (length(agui_run_id) between 1 and 200),
    run_id        uuid not null,
    segment       integer not null check (segment >= 0),
    created_at    timestamptz not null default now(),
    primary key (tenant_id, thread_id, agui_run_id),
    unique (run_id, segment),
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade
);

create index if not exists agui_runs_thread_idx on agui_runs (tenant_id, thread_id, created_at);

-- Row-level security, following 0008's pattern.
alter table agui_runs enable row level security;
alter table agui_runs force row level security;
drop policy if exists tenant_isolation on agui_runs;
create policy tenant_isolation on agui_runs
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on agui_runs to sba_app;
