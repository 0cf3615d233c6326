-- Full-text search with the 'english' configuration: stop words ("what", "is",
-- "our") no longer make every chunk match, and stems ("refunds" ~ "refund") do.
-- The store queries with websearch_to_tsquery('english', ...) to match.
alter table knowledge_chunks drop column if exists tsv;
alter table knowledge_chunks add column tsv tsvector generated always as (
    setweight(to_tsvector('english', title), 'A')
    || setweight(to_tsvector('english', content), 'B')
) stored;
create index if not exists knowledge_chunks_tsv_idx on knowledge_chunks using gin (tsv);
