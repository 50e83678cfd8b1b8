-- The facts again, sorted by stream sequence, with the columns a rollup
-- sums (ADR 0006). `engagements` is sorted by tenant and post, so reading
-- one range of sequences from it reads every part of the table: rolling a
-- range cost as much as the whole history, and grew with it. Here a range
-- is a slice of the primary key. The projector and the rebuild write each
-- batch's facts to both tables before acknowledging it.
CREATE TABLE IF NOT EXISTS facts_by_seq (
    tenant        String,
    seq           UInt64,
    occurred_at   DateTime,
    platform      String,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    likes         Int8,
    shares        UInt8,
    comments      UInt8,
    views         UInt64,
    clicks        UInt8,
    conversions   UInt8,
    follows       Int8,
    sentiment     Int16
) ENGINE = ReplacingMergeTree()
PARTITION BY intDiv(seq, 16777216)
ORDER BY seq;

-- The facts projected before this migration. Stop workers of earlier
-- versions before it runs: facts they write afterwards would be missing
-- here. Run twice (two projectors starting together), it copies rows twice,
-- which readers take once (`LIMIT 1 BY seq`).
INSERT INTO facts_by_seq
SELECT tenant, seq, occurred_at, platform, influencer_id, post_id, campaign_id,
       likes, shares, comments, views, clicks, conversions, follows, sentiment
FROM engagements;
