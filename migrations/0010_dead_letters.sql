-- Steps that exhausted their retries: one row per (run, step), written by the
-- operator when it dead-letters the step (the run fails with StepDeadLettered).
-- The row keeps what is needed to inspect and replay the step by hand: the tool,
-- its params, how many attempts were made and the last error. Re-recording the
-- same step (an operator crash before its status write) changes nothing.

create table if not exists dead_letters (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   text not null,
    run_id      uuid not null,
    step_id     text not null,
    tool        text not null,
    attempts    integer not null check (attempts >= 1),
    last_error  text not null default '',
    params      jsonb not null default '{}'::jsonb,
    created_at  timestamptz not null default now(),
    unique (run_id, step_id),
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade
);

create index if not exists dead_letters_tenant_idx on dead_letters (tenant_id, created_at desc);

-- Row-level security, following 0008's pattern.
alter table dead_letters enable row level security;
alter table dead_letters force row level security;
drop policy if exists tenant_isolation on dead_letters;
create policy tenant_isolation on dead_letters
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on dead_letters to sba_app;
