-- The tenant's task store, written by the task.create tool through the gateway.
--
-- (tenant_id, idempotency_key) is unique: the key is the creating step's
-- "<run-id>:<step-id>", the same for every attempt of that step, so a retried
-- step finds the task its earlier attempt created instead of creating another.
--
-- run_id/step_id record provenance only. There is deliberately no foreign key to
-- runs: a task is a business object that outlives the run record that created it,
-- and run_id comes from the verified step token, never from a request body.

create table if not exists tasks (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       text not null references tenants (id),
    run_id          uuid not null,
    step_id         text not null,
    idempotency_key text not null check (length(idempotency_key) between 1 and 300),
    title           text not null check (length(title) between 1 and 200),
    description     text,
    due_date        date,
    assignee        text,
    created_at      timestamptz not null default now(),
    unique (tenant_id, idempotency_key)
);

create index if not exists tasks_tenant_created_idx on tasks (tenant_id, created_at desc);
create index if not exists tasks_run_idx on tasks (run_id);

-- Row-level security, following 0008's pattern (sba_app exists from 0008 on).
alter table tasks enable row level security;
alter table tasks force row level security;
drop policy if exists tenant_isolation on tasks;
create policy tenant_isolation on tasks
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on tasks to sba_app;
