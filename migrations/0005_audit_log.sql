-- Who did what, append-only. A trigger refuses UPDATE, DELETE and TRUNCATE so
-- not even the application role can rewrite history; rows carry no tenant FK
-- so recording an action never fails because of the tenant's state.

create table if not exists audit_log (
    id         bigserial primary key,
    tenant_id  text not null,
    actor      text not null,
    action     text not null,
    target     text not null default '',
    request_id text,
    payload    jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);

create index if not exists audit_log_tenant_idx on audit_log (tenant_id, created_at desc);

create or replace function audit_log_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

drop trigger if exists audit_log_no_update_delete on audit_log;
create trigger audit_log_no_update_delete
    before update or delete on audit_log
    for each row execute function audit_log_refuse_change();

drop trigger if exists audit_log_no_truncate on audit_log;
create trigger audit_log_no_truncate
    before truncate on audit_log
    for each statement execute function audit_log_refuse_change();
