-- Row-level security on every tenant-scoped table, and the application role.
--
-- THE PATTERN — copy it for every new tenant-scoped table (e.g. 0009_tasks.sql):
--
--     alter table t enable row level security;
--     alter table t force row level security;     -- the owner too, unless superuser
--     drop policy if exists tenant_isolation on t;
--     create policy tenant_isolation on t
--         using (tenant_id = current_setting('app.current_tenant', true))
--         with check (tenant_id = current_setting('app.current_tenant', true));
--     grant select, insert on t to sba_app;        -- only the verbs the store uses
--     grant usage on sequence t_id_seq to sba_app; -- only if it has a serial column
--     -- and reference a parent by (id, tenant_id), not id alone: FK checks bypass RLS
--     foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade
--
-- With no tenant set, current_setting(..., true) is null (or '' after an earlier
-- transaction set it), so the policy matches no row: selects return nothing and
-- inserts fail the WITH CHECK. The store sets the tenant per transaction with
-- set_tenant() (sba_store.db.tenant_transaction) and still filters by tenant_id
-- in every query (defence in depth).
--
-- The API and the operator connect as sba_app (LOGIN, not superuser, no
-- BYPASSRLS, owns nothing). Migrations run as the owner. Grants are explicit per
-- table (no default privileges): a new table is invisible to sba_app until its
-- migration grants it, so a table without a policy cannot leak by accident.
-- Roles are cluster-wide; this file only creates them when missing.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'sba_app') then
        create role sba_app login nosuperuser nobypassrls nocreatedb nocreaterole noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'sba_run_lookup') then
        -- Owns run_owner() and nothing else; nobody logs in as it.
        create role sba_run_lookup nologin nosuperuser nobypassrls nocreatedb nocreaterole noinherit;
    end if;
    -- Fail closed rather than silently trusting a role someone widened.
    if exists (
        select 1 from pg_roles
        where rolname in ('sba_app', 'sba_run_lookup') and (rolsuper or rolbypassrls)
    ) then
        raise exception 'roles sba_app and sba_run_lookup must be NOSUPERUSER NOBYPASSRLS';
    end if;
    execute format('grant connect on database %I to sba_app', current_database());
end
$$;

grant usage on schema public to sba_app, sba_run_lookup;

-- The tenant context: transaction-local, so it never outlives the transaction
-- and cannot leak to the next user of a pooled connection.
create or replace function set_tenant(tenant text) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if tenant is null or tenant = '' then
        raise exception 'set_tenant: a tenant id is required' using errcode = 'invalid_parameter_value';
    end if;
    perform set_config('app.current_tenant', tenant, true);
end;
$$;

revoke all on function set_tenant(text) from public;
grant execute on function set_tenant(text) to sba_app;

-- tenants: keyed on id.
alter table tenants enable row level security;
alter table tenants force row level security;
drop policy if exists tenant_isolation on tenants;
create policy tenant_isolation on tenants
    using (id = current_setting('app.current_tenant', true))
    with check (id = current_setting('app.current_tenant', true));
grant select, insert, update on tenants to sba_app;

alter table runs enable row level security;
alter table runs force row level security;
drop policy if exists tenant_isolation on runs;
create policy tenant_isolation on runs
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert, update on runs to sba_app;

alter table run_events enable row level security;
alter table run_events force row level security;
drop policy if exists tenant_isolation on run_events;
create policy tenant_isolation on run_events
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on run_events to sba_app;

alter table tool_calls enable row level security;
alter table tool_calls force row level security;
drop policy if exists tenant_isolation on tool_calls;
create policy tenant_isolation on tool_calls
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert, update on tool_calls to sba_app;

alter table artifacts enable row level security;
alter table artifacts force row level security;
drop policy if exists tenant_isolation on artifacts;
create policy tenant_isolation on artifacts
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on artifacts to sba_app;

-- audit_log: append-only for sba_app twice over — no UPDATE/DELETE/TRUNCATE
-- grant, and the 0005 trigger that refuses them even to the owner.
alter table audit_log enable row level security;
alter table audit_log force row level security;
drop policy if exists tenant_isolation on audit_log;
create policy tenant_isolation on audit_log
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on audit_log to sba_app;
grant usage on sequence audit_log_id_seq to sba_app;

alter table knowledge_documents enable row level security;
alter table knowledge_documents force row level security;
drop policy if exists tenant_isolation on knowledge_documents;
create policy tenant_isolation on knowledge_documents
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert, delete on knowledge_documents to sba_app;

-- Chunks go with their document (ON DELETE CASCADE runs as the owner).
alter table knowledge_chunks enable row level security;
alter table knowledge_chunks force row level security;
drop policy if exists tenant_isolation on knowledge_chunks;
create policy tenant_isolation on knowledge_chunks
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert on knowledge_chunks to sba_app;

-- Foreign-key checks bypass RLS, so a plain run_id reference would let tenant A
-- attach rows to tenant B's run (and learn that it exists). Composite keys make
-- a child's tenant equal its parent's.
alter table runs add constraint runs_id_tenant_key unique (id, tenant_id);
alter table run_events add constraint run_events_run_tenant_fkey
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade;
alter table tool_calls add constraint tool_calls_run_tenant_fkey
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade;
alter table artifacts add constraint artifacts_run_tenant_fkey
    foreign key (run_id, tenant_id) references runs (id, tenant_id) on delete cascade;
alter table knowledge_documents add constraint knowledge_documents_id_tenant_key
    unique (id, tenant_id);
alter table knowledge_chunks add constraint knowledge_chunks_document_tenant_fkey
    foreign key (document_id, tenant_id) references knowledge_documents (id, tenant_id)
    on delete cascade;

-- run_owner(run_id): the tenant owning a run, or null when there is no such run.
-- Lets the API answer 403 (another tenant's run) apart from 404 (no run) without
-- reading the row under the wrong tenant. SECURITY DEFINER as sba_run_lookup,
-- which may read only runs(id, tenant_id) and has its own policy seeing every
-- run; the search_path is pinned and the body (BEGIN ATOMIC) is bound to
-- public.runs when created, so a caller cannot redirect it to another table.
grant select (id, tenant_id) on runs to sba_run_lookup;
drop policy if exists run_owner_lookup on runs;
create policy run_owner_lookup on runs for select to sba_run_lookup using (true);

create or replace function run_owner(run_id uuid) returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
begin atomic
    select r.tenant_id from public.runs r where r.id = run_owner.run_id;
end;

revoke all on function run_owner(uuid) from public;
grant execute on function run_owner(uuid) to sba_app;

-- ALTER ... OWNER needs the new owner to have CREATE on the schema (unless we are
-- superuser) and us to be able to SET ROLE to it: grant both only for the change.
do $$
begin
    if (select rolsuper from pg_roles where rolname = current_user) then
        null;
    elsif current_setting('server_version_num')::int >= 160000 then
        -- A CREATEROLE owner holds its new roles WITH ADMIN but not SET (PG 16+).
        if not pg_has_role(current_user, 'sba_run_lookup', 'SET') then
            execute format('grant sba_run_lookup to %I with inherit false, set true', current_user);
        end if;
    elsif not pg_has_role(current_user, 'sba_run_lookup', 'MEMBER') then
        execute format('grant sba_run_lookup to %I', current_user);
    end if;
    grant create on schema public to sba_run_lookup;
    alter function run_owner(uuid) owner to sba_run_lookup;
    revoke create on schema public from sba_run_lookup;
end
$$;
