-- Tenants and runs: the roots every other tenant-scoped row hangs off.
-- Every tenant-scoped table carries tenant_id so row-level security can be
-- added later with one policy per table (current_setting('app.current_tenant')).

create table if not exists tenants (
    id           text primary key
                 check (id ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' and length(id) <= 63),
    display_name text not null,
    plan         text not null default 'free',
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

-- One row per AgentRun; id is the AgentRun's metadata.uid.
create table if not exists runs (
    id          uuid primary key,
    tenant_id   text not null references tenants (id),
    namespace   text not null,
    name        text not null,
    prompt      text not null,
    user_id     text,
    phase       text not null default 'pending',
    spec        jsonb not null default '{}'::jsonb,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    finished_at timestamptz
);

-- Not unique: an AgentRun deleted and re-created under the same name is a new
-- run (new uid) and its predecessor's history stays.
create index if not exists runs_namespace_name_idx on runs (namespace, name, created_at desc);

-- Keyset pagination of a tenant's runs, newest first.
create index if not exists runs_tenant_created_idx on runs (tenant_id, created_at desc, id desc);
