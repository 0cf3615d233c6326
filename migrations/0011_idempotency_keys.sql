-- Idempotency keys of the API's POST routes (Idempotency-Key header), per tenant.
--
-- A row is claimed (status null: in flight) before the handler runs and completed
-- with the response it produced (status, body and the headers a replay needs). A
-- replay with the same fingerprint (method, path, caller, canonical body) gets the
-- stored response; another fingerprint gets 409. Rows expire (expires_at, 24 h by
-- default); an expired row is replaced by the next claim of its key and swept by
-- later claims of its tenant. An in-flight row whose API process died is taken over
-- by a retry with the same fingerprint once it is older than the in-flight timeout.

create table if not exists idempotency_keys (
    tenant_id     text not null,
    key           text not null check (length(key) between 1 and 200),
    method        text not null,
    path          text not null,
    request_hash  text not null,
    status        integer check (status between 100 and 599),
    response      jsonb,
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    primary key (tenant_id, key)
);

create index if not exists idempotency_keys_expiry_idx on idempotency_keys (tenant_id, expires_at);

-- Row-level security, following 0008's pattern.
alter table idempotency_keys enable row level security;
alter table idempotency_keys force row level security;
drop policy if exists tenant_isolation on idempotency_keys;
create policy tenant_isolation on idempotency_keys
    using (tenant_id = current_setting('app.current_tenant', true))
    with check (tenant_id = current_setting('app.current_tenant', true));
grant select, insert, update, delete on idempotency_keys to sba_app;
