-- LLM planning: each run's plan as the planner made it, and every tenant's token usage per
-- UTC day (the quota `tokensPerDay` is checked against it before the operator calls a model).
--
-- run_plans: one row per planned run (prompt-only runs; explicit plans are not stored).
-- The operator writes it once, before it records the plan in the AgentRun's status, and
-- reads it back on every later reconcile: an LLM's plan is not reproducible, so the row
-- is the plan of record. A repeat insert (an operator crash before the status write)
-- changes nothing, and the day's tokens are added only by the insert that wrote the row,
-- in the same transaction, so tokens are never counted twice.

create table if not exists run_plans (
    run_id            uuid primary key,
    tenant_id         text not null,
    planner           text not null,
    model             text,
    steps             jsonb not null,
    notes             jsonb not null default '[]'::jsonb,
    prompt_tokens     integer not null default 0 check (prompt_tokens >= 0),
    completion_tokens integer not null default 0 check (completion_tokens >= 0),
    tokens_used       integer not null default 0 check (tokens_used >= 0),
    created_at        timestamptz not null default now(),
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade
);

create index if not exists run_plans_tenant_idx on run_plans (tenant_id, created_at desc);

-- Not a child of runs: metering outlives the runs it counts.
create table if not exists token_usage_daily (
    tenant_id  text not null references tenants (id) on delete cascade,
    day        date not null,
    tokens     bigint not null default 0 check (tokens >= 0),
    llm_calls  integer not null default 0 check (llm_calls >= 0),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, day)
);

-- Row-level security, following 0008's pattern.
alter table run_plans enable row level security;
alter table run_plans force row level security;
drop policy if exists tenant_isolation on run_plans;
create policy tenant_isolation on run_plans
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on run_plans to sba_app;

alter table token_usage_daily enable row level security;
alter table token_usage_daily force row level security;
drop policy if exists tenant_isolation on token_usage_daily;
create policy tenant_isolation on token_usage_daily
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert, update on token_usage_daily to sba_app;
