-- Post attribution looked up by post: `catalogue` is sorted by (tenant,
-- seq), so finding one post's catalogue events scanned the tenant's whole
-- catalogue. `post_catalogue` holds the `post_published` facts again,
-- sorted by post (same columns; still one row per seq once read with
-- FINAL, since a seq always has the same post_id).
CREATE TABLE IF NOT EXISTS post_catalogue (
    tenant        String,
    seq           UInt64,
    type          String,
    occurred_at   DateTime,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    platform      String,
    handle        String,
    name          String,
    content_type  String,
    tags          Array(String),
    has_tags      UInt8,
    budget_e4     Int64,
    has_budget    UInt8,
    currency      String,
    starts_at     DateTime,
    ends_at       DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant, post_id, seq);

-- The posts projected before this table existed. Running this twice (two
-- projectors starting together) writes the same rows twice, which FINAL
-- reads once.
INSERT INTO post_catalogue
SELECT tenant, seq, type, occurred_at, influencer_id, post_id, campaign_id, platform, handle,
       name, content_type, tags, has_tags, budget_e4, has_budget, currency, starts_at, ends_at
FROM catalogue WHERE type = 'post_published';
