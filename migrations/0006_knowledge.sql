-- The knowledge base: documents split into chunks, each with an embedding for
-- vector search and a tsvector for full-text search (hybrid retrieval).
-- The embedding size is fixed at 256 (sba_core.knowledge.EMBEDDING_DIMENSIONS).

create extension if not exists vector;

create table if not exists knowledge_documents (
    id         uuid primary key default gen_random_uuid(),
    tenant_id  text not null references tenants (id),
    title      text not null,
    source     text,
    content    text not null,
    metadata   jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);

create index if not exists knowledge_documents_tenant_idx
    on knowledge_documents (tenant_id, created_at desc);

-- title is copied from the document because a generated column can only read
-- its own row; title terms weigh more (A) than body terms (B).
create table if not exists knowledge_chunks (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   text not null,
    document_id uuid not null references knowledge_documents (id) on delete cascade,
    ord         integer not null check (ord >= 0),
    title       text not null default '',
    content     text not null,
    embedding   vector(256) not null,
    tsv         tsvector generated always as (
                    setweight(to_tsvector('simple', title), 'A')
                    || setweight(to_tsvector('simple', content), 'B')
                ) stored,
    unique (document_id, ord)
);

create index if not exists knowledge_chunks_embedding_idx
    on knowledge_chunks using hnsw (embedding vector_cosine_ops);
create index if not exists knowledge_chunks_tsv_idx on knowledge_chunks using gin (tsv);
create index if not exists knowledge_chunks_tenant_idx on knowledge_chunks (tenant_id);
